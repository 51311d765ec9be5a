//! The gRPC control server: one `Control.Session` stream per sidecar.
//!
//! The first message must be `Hello`. The credential is checked by the
//! [`Authenticator`]; a replica that does not lead answers `Redirect` and
//! ends the stream with UNAVAILABLE. Everything after that is handed to the
//! [`engine`](crate::engine).

use std::{
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use futures_util::{Stream, StreamExt};
use tokenwarden_proto::{
    Hello, OperatorMessage, Redirect, SidecarMessage,
    control_server::{Control, ControlServer},
    operator_message::Msg as Out,
    sidecar_message::Msg as In,
};
use tokio::sync::{mpsc, oneshot, watch};
use tonic::{Request, Response, Status, Streaming};

use crate::{
    engine::Cmd,
    metrics::Metrics,
    source::{Authenticator, Claim, Leadership},
};

/// The engine's command channel, once this replica leads and has synced.
pub type EngineHandle = watch::Receiver<Option<mpsc::Sender<Cmd>>>;

/// The `Control` service.
pub struct ControlService {
    auth: Arc<dyn Authenticator>,
    leadership: watch::Receiver<Leadership>,
    engine: EngineHandle,
    metrics: Arc<Metrics>,
    next_id: AtomicU64,
}

impl ControlService {
    /// A service answering from `engine` when this replica leads.
    pub fn new(
        auth: Arc<dyn Authenticator>,
        leadership: watch::Receiver<Leadership>,
        engine: EngineHandle,
        metrics: Arc<Metrics>,
    ) -> ControlServer<Self> {
        ControlServer::new(Self {
            auth,
            leadership,
            engine,
            metrics,
            next_id: AtomicU64::new(1),
        })
    }
}

type OutStream = Pin<Box<dyn Stream<Item = Result<OperatorMessage, Status>> + Send>>;

fn claim(h: &Hello) -> Claim {
    Claim {
        namespace: h.namespace.clone(),
        pod_name: h.pod_name.clone(),
        pod_uid: h.pod_uid.clone(),
        labels: h.labels.clone().into_iter().collect(),
        credential: h.credential.clone(),
    }
}

#[tonic::async_trait]
impl Control for ControlService {
    type SessionStream = OutStream;

    async fn session(
        &self,
        request: Request<Streaming<SidecarMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let mut inbound = request.into_inner();
        let first = match inbound.message().await? {
            Some(SidecarMessage {
                msg: Some(In::Hello(h)),
            }) => h,
            Some(_) => {
                self.metrics.refused("no_hello");
                return Err(Status::failed_precondition(
                    "the first message on a session must be Hello",
                ));
            }
            None => return Err(Status::cancelled("stream closed before Hello")),
        };
        if first.protocol_version == 0 {
            self.metrics.refused("protocol");
            return Err(Status::invalid_argument(
                "Hello.protocol_version is required (this operator speaks 1)",
            ));
        }
        let leadership = self.leadership.borrow().clone();
        if !leadership.leader {
            self.metrics.refused("not_leader");
            let address = leadership.leader_address.clone().unwrap_or_default();
            let reason = if address.is_empty() {
                "this replica is not the leader and no leader is known yet; retry".to_string()
            } else {
                format!("this replica is not the leader; connect to {address}")
            };
            let redirect = OperatorMessage {
                msg: Some(Out::Redirect(Redirect {
                    address,
                    reason: reason.clone(),
                })),
            };
            let s =
                futures_util::stream::iter(vec![Ok(redirect), Err(Status::unavailable(reason))]);
            return Ok(Response::new(Box::pin(s)));
        }
        let identity = match self.auth.authenticate(&claim(&first)).await {
            Ok(i) => i,
            Err(e) => {
                self.metrics.refused("unauthenticated");
                tracing::warn!(
                    pod = %format!("{}/{}", first.namespace, first.pod_name),
                    reason = %e,
                    "sidecar refused"
                );
                return Err(Status::unauthenticated(format!("sidecar refused: {e}")));
            }
        };
        let Some(engine) = self.engine.borrow().clone() else {
            self.metrics.refused("not_synced");
            return Err(Status::unavailable(
                "the operator is starting (objects not synced yet); retry",
            ));
        };
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(4096);
        let (reply, answer) = oneshot::channel();
        engine
            .send(Cmd::Open {
                id,
                identity,
                hello: Box::new(first),
                tx,
                reply,
            })
            .await
            .map_err(|_| Status::unavailable("the operator is shutting down"))?;
        match answer.await {
            Ok(Ok(())) => {}
            Ok(Err(status)) => return Err(status),
            Err(_) => return Err(Status::unavailable("the operator is shutting down")),
        }
        tokio::spawn(async move {
            loop {
                match inbound.message().await {
                    Ok(Some(SidecarMessage { msg: Some(m) })) => {
                        if engine.send(Cmd::Msg(id, m)).await.is_err() {
                            break;
                        }
                    }
                    Ok(Some(SidecarMessage { msg: None })) => {}
                    Ok(None) => break,
                    Err(e) => {
                        tracing::debug!(error = %e, "sidecar stream error");
                        break;
                    }
                }
            }
            let _ = engine.send(Cmd::Close(id)).await;
        });
        let out = tokio_stream_from(rx);
        Ok(Response::new(Box::pin(out)))
    }
}

fn tokio_stream_from(
    rx: mpsc::Receiver<Result<OperatorMessage, Status>>,
) -> impl Stream<Item = Result<OperatorMessage, Status>> + Send {
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) })
        .boxed()
}
