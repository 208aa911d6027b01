//! The Docker Engine API client: HTTP/1.1 (hyper) over the daemon's unix
//! socket, one `GET /containers/json?all=1` per request from the mapping.
//! It runs in its own task with a timeout, so the event loop never waits
//! on dockerd.
use std::path::{Path, PathBuf};
use std::time::Duration;

use http_body_util::{BodyExt as _, Empty};
use hyper::{body::Bytes, Request};
use hyper_util::rt::TokioIo;
use netns_trace::containers::{docker, Info};
use tokio::{net::UnixStream, sync::mpsc};

/// Per request: connect, send, read the whole answer.
const TIMEOUT: Duration = Duration::from_secs(2);

/// One container list from the API, or one sentence saying why not.
pub async fn list(socket: &Path) -> Result<Vec<Info>, String> {
    let what = format!("Docker API at {}", socket.display());
    let stream = UnixStream::connect(socket)
        .await
        .map_err(|e| format!("{what}: connect: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("{what}: handshake: {e}"))?;
    let conn = tokio::spawn(conn);
    let req = Request::get(docker::LIST_PATH)
        .header(hyper::header::HOST, "docker")
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("{what}: request: {e}"))?;
    let answer = async {
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| format!("{what}: GET {}: {e}", docker::LIST_PATH))?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("{what}: reading the answer: {e}"))?
            .to_bytes();
        if !status.is_success() {
            return Err(format!("{what}: GET {}: {status}", docker::LIST_PATH));
        }
        docker::parse_list(&body)
    }
    .await;
    conn.abort();
    answer
}

/// The API task: each `()` on `requests` is answered on the returned
/// channel (a list, or why not, within [`TIMEOUT`]).
pub fn spawn(socket: PathBuf) -> (mpsc::Sender<()>, mpsc::Receiver<Result<Vec<Info>, String>>) {
    let (req_tx, mut req_rx) = mpsc::channel::<()>(1);
    let (resp_tx, resp_rx) = mpsc::channel(1);
    tokio::spawn(async move {
        while req_rx.recv().await.is_some() {
            let answer = match tokio::time::timeout(TIMEOUT, list(&socket)).await {
                Ok(a) => a,
                Err(_) => Err(format!(
                    "Docker API at {}: no answer within {} s",
                    socket.display(),
                    TIMEOUT.as_secs()
                )),
            };
            if resp_tx.send(answer).await.is_err() {
                break;
            }
        }
    });
    (req_tx, resp_rx)
}
