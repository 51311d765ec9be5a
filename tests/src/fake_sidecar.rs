//! A fake sidecar: one `Control.Session` stream to a real operator, played
//! message by message by the test (or by the load tool, many at once).

use std::time::{Duration, Instant};

use tokenwarden_proto::{
    ConfigSnapshot, Hello, OperatorMessage, SidecarMessage, control_client::ControlClient,
    operator_message::Msg as Out, sidecar_message::Msg as In,
};
use tokio::sync::mpsc;
use tonic::{Status, Streaming, transport::Channel};

/// One session: what the test sends, what the operator answers.
pub struct FakeSidecar {
    /// Messages to the operator (the Hello was sent first).
    pub tx: mpsc::UnboundedSender<SidecarMessage>,
    /// Messages from the operator.
    pub rx: Streaming<OperatorMessage>,
    /// The first snapshot, when [`FakeSidecar::connect_synced`] read it.
    pub first: Option<ConfigSnapshot>,
}

impl FakeSidecar {
    /// Open a session on `channel` and send `hello`.
    ///
    /// # Errors
    /// The operator refused the stream.
    pub async fn open(channel: Channel, hello: Hello) -> Result<FakeSidecar, Status> {
        let (tx, rx) = mpsc::unbounded_channel();
        tx.send(SidecarMessage {
            msg: Some(In::Hello(hello)),
        })
        .map_err(|_| Status::internal("outbound queue closed"))?;
        let out =
            futures_util::stream::unfold(
                rx,
                |mut rx| async move { rx.recv().await.map(|m| (m, rx)) },
            );
        let resp = ControlClient::new(channel).session(out).await?;
        Ok(FakeSidecar {
            tx,
            rx: resp.into_inner(),
            first: None,
        })
    }

    /// Connect to `url` (retrying for 10 s while nothing listens) and open a
    /// session.
    ///
    /// # Errors
    /// The operator refused the stream.
    ///
    /// # Panics
    /// When no connection is made within 10 s.
    #[allow(clippy::panic)]
    pub async fn connect(url: &str, hello: Hello) -> Result<FakeSidecar, Status> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let channel = loop {
            match Channel::from_shared(url.to_string())
                .map_err(|e| Status::invalid_argument(e.to_string()))?
                .connect()
                .await
            {
                Ok(c) => break c,
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("connect {url}: {e}"),
            }
        };
        Self::open(channel, hello).await
    }

    /// Connect as a sidecar would: retry while the operator is starting (not
    /// leading yet, objects not synced) until the first snapshot arrives
    /// (kept in [`FakeSidecar::first`]), within 15 s.
    ///
    /// # Panics
    /// When the operator refuses for another reason, or never serves.
    #[allow(clippy::panic)]
    pub async fn connect_synced(url: &str, hello: Hello) -> FakeSidecar {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            match Self::connect(url, hello.clone()).await {
                Ok(mut c) => {
                    if let Ok(Some(OperatorMessage {
                        msg: Some(Out::Config(snap)),
                    })) = c.rx.message().await
                    {
                        c.first = Some(snap);
                        return c;
                    }
                }
                Err(s) if s.code() == tonic::Code::Unavailable => {}
                Err(s) => panic!("{}: refused: {s}", hello.sidecar_id),
            }
            assert!(
                Instant::now() < deadline,
                "{}: the operator never became ready",
                hello.sidecar_id
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Send one message.
    ///
    /// # Panics
    /// When the session is gone.
    #[allow(clippy::expect_used)]
    pub async fn send(&self, m: In) {
        self.tx
            .send(SidecarMessage { msg: Some(m) })
            .expect("the session is open");
    }

    /// The next message `pick` takes within `secs` (others are skipped).
    ///
    /// # Panics
    /// When none arrives, or the stream ends.
    pub async fn next<T>(&mut self, secs: u64, pick: impl FnMut(Out) -> Option<T>) -> T {
        self.next_named("a message", secs, pick).await
    }

    /// [`FakeSidecar::next`], naming `what` it waits for when it panics.
    ///
    /// # Panics
    /// When none arrives, or the stream ends.
    #[allow(clippy::expect_used, clippy::panic)]
    pub async fn next_named<T>(
        &mut self,
        what: &str,
        secs: u64,
        mut pick: impl FnMut(Out) -> Option<T>,
    ) -> T {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let m = tokio::time::timeout_at(deadline, self.rx.message())
                .await
                .unwrap_or_else(|_| panic!("timed out waiting for {what} ({secs} s)"))
                .expect("stream error")
                .expect("stream ended");
            if let Some(t) = m.msg.and_then(&mut pick) {
                return t;
            }
        }
    }

    /// The first snapshot if not taken yet, else the next one (10 s).
    pub async fn snapshot(&mut self) -> ConfigSnapshot {
        if let Some(s) = self.first.take() {
            return s;
        }
        self.next(10, |m| match m {
            Out::Config(c) => Some(c),
            _ => None,
        })
        .await
    }

    /// Wait (10 s) for a `UsageAck` up to at least `seq`.
    pub async fn ack_up_to(&mut self, seq: u64) {
        self.next(10, |m| match m {
            Out::UsageAck(a) if a.up_to_seq >= seq => Some(()),
            _ => None,
        })
        .await
    }
}
