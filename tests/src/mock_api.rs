//! A scripted Kubernetes API for tests of code that takes a `kube::Client`:
//! the client's tower service is a tower-test mock, and the test answers
//! each request it makes.
//!
//! Two ways to answer, on the same [`MockApi`] (which logs every request):
//!
//! - interactively: [`MockApi::next`] gives the request and a [`Responder`],
//!   for tests that assert state between answers;
//! - as a [`Scenario`] (the kube-rs controller-rs `fixtures.rs` pattern): a
//!   sequence of expected requests (method, URI, optionally content type and
//!   JSON body) with canned answers; a request out of order fails the test
//!   naming the step, what was expected and what came.
//!
//! Generic over the body types so that this crate needs no kube: the
//! operator's tests use `MockApi<kube::client::Body, kube::client::Body>`.

use std::{
    fmt::Debug,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt as _;
use serde_json::Value;
use tower_test::mock::{Handle, Mock, SendResponse};

/// How long [`MockApi::next`] and a [`Scenario`] step wait for a request.
pub const WAIT: Duration = Duration::from_secs(2);

/// One request as the API server saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// `GET`, `PATCH`, …
    pub method: String,
    /// Path and query.
    pub uri: String,
    /// The `content-type` header.
    pub content_type: Option<String>,
    /// The body.
    pub body: Vec<u8>,
}

impl Seen {
    /// The body as JSON (`Null` when empty).
    ///
    /// # Panics
    /// When it is not JSON.
    #[allow(clippy::panic)]
    pub fn json(&self) -> Value {
        if self.body.is_empty() {
            return Value::Null;
        }
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{} {}: body is not JSON: {e}", self.method, self.uri))
    }

    /// The path without the query.
    pub fn path(&self) -> &str {
        self.uri.split('?').next().unwrap_or("")
    }
}

/// Every request of one or more [`MockApi`]s, in order.
pub type Log = Arc<Mutex<Vec<Seen>>>;

/// A new, empty log.
pub fn new_log() -> Log {
    Arc::default()
}

/// The requests logged so far.
pub fn logged(log: &Log) -> Vec<Seen> {
    log.lock().unwrap_or_else(PoisonError::into_inner).clone()
}

/// What an [`AutoAnswer`] does with a request.
pub enum Auto {
    /// Answer with this status and JSON.
    Json(u16, Value),
    /// Hold it open, never answered (a watch the client waits on).
    Park,
}

/// Answers some requests before the test sees them (e.g. the LISTs and
/// WATCHes of a cache the test is not about); `None`: the test answers.
pub type AutoAnswer = Box<dyn FnMut(&Seen) -> Option<Auto> + Send>;

/// The answer to one request.
pub struct Responder<R> {
    send: SendResponse<Response<R>>,
}

impl<R: From<Vec<u8>>> Responder<R> {
    /// Answer `status` with `body` as JSON.
    ///
    /// # Panics
    /// When `status` is not a status code.
    #[allow(clippy::expect_used)]
    pub fn json(self, status: u16, body: &Value) {
        let bytes = serde_json::to_vec(body).expect("JSON serializes");
        let response = Response::builder()
            .status(StatusCode::from_u16(status).expect("a status code"))
            .header("content-type", "application/json")
            .body(R::from(bytes))
            .expect("a response");
        self.send.send_response(response);
    }

    /// Answer 200 with `body` as it is (e.g. newline-delimited watch events).
    #[allow(clippy::expect_used)]
    pub fn raw(self, body: String) {
        self.send.send_response(
            Response::builder()
                .status(200)
                .body(R::from(body.into_bytes()))
                .expect("a response"),
        );
    }
}

/// The API server side of a mock client.
pub struct MockApi<Q, R> {
    handle: Handle<Request<Q>, Response<R>>,
    log: Log,
    /// Requests held open (never answered).
    pub parked: Vec<Responder<R>>,
    auto: Option<AutoAnswer>,
}

/// A mock service for the client (`kube::Client::new(service, ns)`) and the
/// API server that answers it, logging into `log`.
pub fn pair<Q, R>(log: &Log) -> (Mock<Request<Q>, Response<R>>, MockApi<Q, R>) {
    let (service, handle) = tower_test::mock::pair::<Request<Q>, Response<R>>();
    let api = MockApi {
        handle,
        log: log.clone(),
        parked: Vec::new(),
        auto: None,
    };
    (service, api)
}

impl<Q, R> MockApi<Q, R>
where
    Q: http_body::Body<Data = Bytes> + Send + 'static,
    Q::Error: Debug,
    R: From<Vec<u8>>,
{
    /// Answer what `auto` takes before the test sees it.
    pub fn auto_answer(&mut self, auto: AutoAnswer) {
        self.auto = Some(auto);
    }

    /// The next request the test answers, within `wait`; `None` when none
    /// comes or the client is gone.
    ///
    /// # Panics
    /// When the request body cannot be read.
    #[allow(clippy::expect_used)]
    pub async fn try_next(&mut self, wait: Duration) -> Option<(Seen, Responder<R>)> {
        loop {
            let (request, send) = tokio::time::timeout(wait, self.handle.next_request())
                .await
                .ok()??;
            let (parts, body) = request.into_parts();
            let body = body.collect().await.expect("a request body").to_bytes();
            let seen = Seen {
                method: parts.method.to_string(),
                uri: parts.uri.to_string(),
                content_type: parts
                    .headers
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string),
                body: body.to_vec(),
            };
            self.log
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(seen.clone());
            let responder = Responder { send };
            match self.auto.as_mut().and_then(|auto| auto(&seen)) {
                Some(Auto::Json(status, body)) => responder.json(status, &body),
                Some(Auto::Park) => self.parked.push(responder),
                None => return Some((seen, responder)),
            }
        }
    }

    /// The next request, within [`WAIT`].
    ///
    /// # Panics
    /// When none comes.
    #[allow(clippy::expect_used)]
    pub async fn next(&mut self) -> (Seen, Responder<R>) {
        self.try_next(WAIT)
            .await
            .expect("expected another API request")
    }

    /// No request arrives within `wait`.
    ///
    /// # Panics
    /// When one does.
    #[allow(clippy::panic)]
    pub async fn silent(&mut self, wait: Duration) {
        if let Some((seen, _)) = self.try_next(wait).await {
            panic!("unexpected request {} {}", seen.method, seen.uri);
        }
    }
}

/// What a [`Scenario`] step answers.
enum Reply {
    Json(u16, Value),
    /// The request's own body (what the API server does on create/update).
    Echo(u16),
}

/// One expected request and its answer.
struct Step {
    method: Method,
    uri: String,
    content_type: Option<String>,
    body: Option<Value>,
    reply: Option<Reply>,
}

/// A sequence of expected requests with canned answers.
///
/// ```ignore
/// let seen = Scenario::new()
///     .request(Method::GET, "/api/v1/namespaces/ns/secrets/tls")
///     .reply(404, not_found)
///     .request(Method::POST, "/api/v1/namespaces/ns/secrets?")
///     .echo(201)
///     .run(&mut api)
///     .await;
/// assert_eq!(seen[1].json()["type"], "kubernetes.io/tls");
/// ```
#[derive(Default)]
pub struct Scenario {
    steps: Vec<Step>,
}

impl Scenario {
    /// No steps yet.
    pub fn new() -> Scenario {
        Scenario::default()
    }

    /// Expect `method uri` (path and query, exactly) next.
    pub fn request(mut self, method: Method, uri: impl Into<String>) -> Scenario {
        self.steps.push(Step {
            method,
            uri: uri.into(),
            content_type: None,
            body: None,
            reply: None,
        });
        self
    }

    fn last(&mut self) -> &mut Step {
        match self.steps.last_mut() {
            Some(step) => step,
            None => unreachable_step(),
        }
    }

    /// The last request carries this content type.
    pub fn content_type(mut self, content_type: &str) -> Scenario {
        self.last().content_type = Some(content_type.to_string());
        self
    }

    /// The last request's body is exactly this JSON.
    pub fn body(mut self, body: Value) -> Scenario {
        self.last().body = Some(body);
        self
    }

    /// Answer the last request with `status` and `body`.
    pub fn reply(mut self, status: u16, body: Value) -> Scenario {
        self.last().reply = Some(Reply::Json(status, body));
        self
    }

    /// Answer the last request with `status` and its own body.
    pub fn echo(mut self, status: u16) -> Scenario {
        self.last().reply = Some(Reply::Echo(status));
        self
    }

    /// Play the steps in order against `api`; returns the requests as seen.
    ///
    /// # Panics
    /// When a request does not come within [`WAIT`], or differs from its step.
    #[allow(clippy::panic)]
    pub async fn run<Q, R>(self, api: &mut MockApi<Q, R>) -> Vec<Seen>
    where
        Q: http_body::Body<Data = Bytes> + Send + 'static,
        Q::Error: Debug,
        R: From<Vec<u8>>,
    {
        let mut seen_all = Vec::with_capacity(self.steps.len());
        for (i, step) in self.steps.into_iter().enumerate() {
            let expected = format!("step {i}: {} {}", step.method, step.uri);
            let Some((seen, responder)) = api.try_next(WAIT).await else {
                panic!("{expected}: no request within {WAIT:?}");
            };
            assert!(
                seen.method == step.method.as_str() && seen.uri == step.uri,
                "{expected}: got {} {}",
                seen.method,
                seen.uri
            );
            if let Some(ct) = &step.content_type {
                assert_eq!(seen.content_type.as_ref(), Some(ct), "{expected}");
            }
            if let Some(body) = &step.body {
                assert_eq!(&seen.json(), body, "{expected}: the request body");
            }
            match step.reply {
                Some(Reply::Json(status, body)) => responder.json(status, &body),
                Some(Reply::Echo(status)) => responder.json(status, &seen.json()),
                None => panic!("{expected}: the scenario gives no answer"),
            }
            seen_all.push(seen);
        }
        seen_all
    }
}

#[allow(clippy::panic)]
fn unreachable_step() -> ! {
    panic!("Scenario: content_type/body/reply before the first request()")
}
