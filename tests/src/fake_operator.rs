//! A fake operator: the `Control` gRPC service on 127.0.0.1, scripted by the
//! test (messages sent on Hello, messages pushed to the latest session) and
//! recording what the sidecar sends (Hello, ACK/NACK, usage batches, lease
//! requests). It can stop (cutting every connection, as an operator that
//! dies) and serve again on the same address.

use std::{
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use futures_util::Stream;
use tokenwarden_proto::{
    ConfigAck, Hello, OperatorMessage, SidecarMessage, UsageRecord,
    control_server::{Control, ControlServer},
    operator_message::Msg as Op,
    sidecar_message::Msg as Sc,
};
use tokio::sync::{mpsc, oneshot};
use tonic::{Request, Response, Status, Streaming};

use crate::process::free_port;

type OpTx = mpsc::UnboundedSender<Result<OperatorMessage, Status>>;

#[derive(Default)]
struct OpState {
    /// Sent to every new session after its Hello.
    on_hello: Vec<OperatorMessage>,
    /// The latest session's sender.
    session: Option<OpTx>,
}

fn lock(state: &Mutex<OpState>) -> std::sync::MutexGuard<'_, OpState> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The gRPC service behind [`FakeOperator`].
#[derive(Clone)]
struct Service {
    state: Arc<Mutex<OpState>>,
    events: mpsc::UnboundedSender<SidecarMessage>,
}

#[tonic::async_trait]
impl Control for Service {
    type SessionStream = Pin<Box<dyn Stream<Item = Result<OperatorMessage, Status>> + Send>>;

    async fn session(
        &self,
        req: Request<Streaming<SidecarMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let mut inbound = req.into_inner();
        let (tx, rx) = mpsc::unbounded_channel();
        let state = self.state.clone();
        let events = self.events.clone();
        tokio::spawn(async move {
            let mut first = true;
            while let Ok(Some(m)) = inbound.message().await {
                if first {
                    first = false;
                    let mut st = lock(&state);
                    for msg in &st.on_hello {
                        let _ = tx.send(Ok(msg.clone()));
                    }
                    st.session = Some(tx.clone());
                }
                let _ = events.send(m);
            }
        });
        let out =
            futures_util::stream::unfold(
                rx,
                |mut rx| async move { rx.recv().await.map(|m| (m, rx)) },
            );
        Ok(Response::new(Box::pin(out)))
    }
}

/// A fake operator on 127.0.0.1 (plaintext h2).
pub struct FakeOperator {
    /// Where it listens.
    pub addr: SocketAddr,
    state: Arc<Mutex<OpState>>,
    events: mpsc::UnboundedReceiver<SidecarMessage>,
    events_tx: mpsc::UnboundedSender<SidecarMessage>,
    stop: Option<(oneshot::Sender<()>, tokio::task::JoinHandle<()>)>,
}

impl FakeOperator {
    /// Listen on a free port.
    pub async fn start() -> FakeOperator {
        let (events_tx, events) = mpsc::unbounded_channel();
        let mut op = FakeOperator {
            addr: SocketAddr::from(([127, 0, 0, 1], free_port())),
            state: Arc::default(),
            events,
            events_tx,
            stop: None,
        };
        op.serve().await;
        op
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// (Re)start serving on [`FakeOperator::addr`].
    ///
    /// # Panics
    /// When the address cannot be bound.
    #[allow(clippy::expect_used)]
    pub async fn serve(&mut self) {
        let svc = Service {
            state: self.state.clone(),
            events: self.events_tx.clone(),
        };
        let (tx, mut rx) = oneshot::channel::<()>();
        let listener = tokio::net::TcpListener::bind(self.addr)
            .await
            .expect("the fake operator's address is free");
        let svc = ControlServer::new(svc);
        // h2 connections served by hyper; dropping the JoinSet on stop cuts
        // every connection at once (like an operator that dies).
        let handle = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    _ = &mut rx => break,
                    Ok((io, _)) = listener.accept() => {
                        let svc = svc.clone();
                        conns.spawn(async move {
                            let _ = hyper::server::conn::http2::Builder::new(
                                hyper_util::rt::TokioExecutor::new(),
                            )
                            .serve_connection(
                                hyper_util::rt::TokioIo::new(io),
                                hyper_util::service::TowerToHyperService::new(svc),
                            )
                            .await;
                        });
                    }
                }
            }
        });
        self.stop = Some((tx, handle));
    }

    /// Stop: end the session with UNAVAILABLE and stop listening.
    pub async fn stop(&mut self) {
        if let Some(s) = lock(&self.state).session.take() {
            let _ = s.send(Err(Status::unavailable("operator stopping")));
        }
        if let Some((tx, mut handle)) = self.stop.take() {
            let _ = tx.send(());
            if tokio::time::timeout(Duration::from_secs(5), &mut handle)
                .await
                .is_err()
            {
                handle.abort();
            }
        }
        // Whatever arrived before the stop is of no interest.
        tokio::time::sleep(Duration::from_millis(200)).await;
        while self.events.try_recv().is_ok() {}
    }

    /// What every new session is sent after its Hello.
    pub fn on_hello(&self, msgs: Vec<OperatorMessage>) {
        lock(&self.state).on_hello = msgs;
    }

    /// Send `msg` on the latest session.
    ///
    /// # Panics
    /// When no session was opened yet, or it is gone.
    #[allow(clippy::expect_used)]
    pub fn send(&self, msg: Op) {
        let st = lock(&self.state);
        st.session
            .as_ref()
            .expect("a session")
            .send(Ok(OperatorMessage { msg: Some(msg) }))
            .expect("the session is open");
    }

    /// The next message matching `pick` within 10 s (others are skipped).
    ///
    /// # Panics
    /// When none arrives.
    #[allow(clippy::expect_used, clippy::panic)]
    pub async fn next<T>(&mut self, what: &str, mut pick: impl FnMut(Sc) -> Option<T>) -> T {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let m = tokio::time::timeout_at(deadline, self.events.recv())
                .await
                .unwrap_or_else(|_| panic!("no {what} within 10 s"))
                .expect("events channel open");
            if let Some(t) = m.msg.and_then(&mut pick) {
                return t;
            }
        }
    }

    /// The next Hello.
    pub async fn hello(&mut self) -> Hello {
        self.next("Hello", |m| match m {
            Sc::Hello(h) => Some(h),
            _ => None,
        })
        .await
    }

    /// The next ConfigAck (an ACK or a NACK).
    pub async fn ack(&mut self) -> ConfigAck {
        self.next("ConfigAck", |m| match m {
            Sc::ConfigAck(a) => Some(a),
            _ => None,
        })
        .await
    }

    /// Usage records until at least `n` arrived (in arrival order).
    pub async fn records(&mut self, n: usize) -> Vec<UsageRecord> {
        let mut out: Vec<UsageRecord> = Vec::new();
        while out.len() < n {
            let batch = self
                .next("UsageBatch", |m| match m {
                    Sc::Usage(b) => Some(b),
                    _ => None,
                })
                .await;
            assert!(batch.records.len() <= 500);
            out.extend(batch.records);
        }
        out
    }

    /// No usage batch within `ms`.
    ///
    /// # Panics
    /// When one arrives.
    #[allow(clippy::panic)]
    pub async fn no_records_within(&mut self, ms: u64) {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(ms);
        while let Ok(Some(m)) = tokio::time::timeout_at(deadline, self.events.recv()).await {
            if let Some(Sc::Usage(b)) = m.msg {
                panic!(
                    "unexpected usage batch: {:?}",
                    b.records.iter().map(|r| r.seq).collect::<Vec<_>>()
                );
            }
        }
    }
}
