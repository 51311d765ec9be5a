//! The floor of the sidecar's stack, for the benchmark: the same tokio runtime
//! (multi-thread, `--threads`-many workers), the same hyper-util server
//! (HTTP/1.1 + h2c, `TCP_NODELAY`) and the same pooled upstream client
//! (`tokenwarden_sidecar::upstream::client`) as the sidecar, forwarding every
//! request to one upstream with nothing else: no parsing, routing, budgets,
//! metering, ledger or metrics. The request body is read whole (the sidecar
//! must read it to parse it), the response body is streamed back as it comes.
//!
//! What the sidecar adds over this row is the cost of its own work; what this
//! row adds over an nginx `proxy_pass` hop is the cost of the stack.
//!
//! usage: hyper_floor LISTEN_ADDR UPSTREAM_ORIGIN [THREADS]
//!   e.g. hyper_floor 127.0.0.1:18188 http://127.0.0.1:18181 1

use std::{convert::Infallible, net::SocketAddr, sync::Arc};

use http::{HeaderMap, Request, Response, Uri, header};
use http_body_util::{BodyExt, Full};
use hyper::{body::Incoming, service::service_fn};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use tokenwarden_sidecar::upstream::{UpstreamClient, client};
use tokio::net::TcpListener;

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let (Some(listen), Some(origin)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: hyper_floor LISTEN_ADDR UPSTREAM_ORIGIN [THREADS]");
        return std::process::ExitCode::from(64);
    };
    let listen: SocketAddr = match listen.parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("hyper_floor: LISTEN_ADDR {listen}: {e}");
            return std::process::ExitCode::from(64);
        }
    };
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.enable_all();
    if let Some(n) = args.get(3).and_then(|t| t.parse::<usize>().ok()) {
        rt.worker_threads(n.max(1));
    }
    let rt = match rt.build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("hyper_floor: cannot start the runtime: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    let origin = origin.trim_end_matches('/').to_string();
    // As the sidecar: the accept loop runs on a worker, not in `block_on`.
    match rt.block_on(async move { tokio::spawn(serve(listen, origin)).await }) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("hyper_floor: the accept loop failed: {e}");
            std::process::ExitCode::from(1)
        }
    }
}

async fn serve(listen: SocketAddr, origin: String) -> std::process::ExitCode {
    let upstream = match client(None) {
        Ok(c) => Arc::new(c),
        Err(e) => {
            eprintln!("hyper_floor: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    let listener = match TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("hyper_floor: cannot listen on {listen}: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    let origin: Arc<str> = origin.into();
    let builder = Arc::new(auto::Builder::new(TokioExecutor::new()));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (builder, upstream, origin) = (builder.clone(), upstream.clone(), origin.clone());
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let (upstream, origin) = (upstream.clone(), origin.clone());
                async move { Ok::<_, Infallible>(forward(&upstream, &origin, req).await) }
            });
            let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}

async fn forward(
    upstream: &UpstreamClient,
    origin: &str,
    req: Request<Incoming>,
) -> Response<http_body_util::Either<Incoming, Full<bytes::Bytes>>> {
    let bad_gateway = |why: String| {
        let mut r = Response::new(http_body_util::Either::Right(Full::new(why.into())));
        *r.status_mut() = http::StatusCode::BAD_GATEWAY;
        r
    };
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return bad_gateway(format!("reading the request: {e}")),
    };
    let pq = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let uri: Uri = match format!("{origin}{pq}").parse() {
        Ok(u) => u,
        Err(e) => return bad_gateway(format!("upstream URL: {e}")),
    };
    let mut headers = HeaderMap::with_capacity(parts.headers.len());
    for (name, value) in &parts.headers {
        if !matches!(
            name.as_str(),
            "host" | "connection" | "keep-alive" | "transfer-encoding" | "content-length"
        ) {
            headers.append(name.clone(), value.clone());
        }
    }
    let mut up = Request::new(Full::new(body));
    *up.method_mut() = parts.method;
    *up.uri_mut() = uri;
    *up.headers_mut() = headers;
    match upstream.request(up).await {
        Ok(resp) => {
            let (mut parts, body) = resp.into_parts();
            parts.headers.remove(header::CONNECTION);
            Response::from_parts(parts, http_body_util::Either::Left(body))
        }
        Err(e) => bad_gateway(format!("upstream: {e}")),
    }
}
