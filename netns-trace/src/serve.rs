//! The `--metrics-addr` HTTP endpoint: one small task per connection, GET
//! /metrics answered from the shared registry (see `netns_trace::metrics`).
use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{anyhow, Result};
use netns_trace::metrics::{http_response, Metrics};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
};

/// Most bytes of a request head read before giving up on it.
const MAX_HEAD: usize = 8192;

/// Binds `addr` and serves in the background; returns the bound address
/// (port 0 picks a free one).
pub async fn start(addr: SocketAddr, metrics: Arc<Mutex<Metrics>>) -> Result<SocketAddr> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow!("--metrics-addr {addr}: cannot listen: {e}"))?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    let m = metrics.clone();
                    tokio::spawn(async move {
                        if let Err(e) = answer(stream, m).await {
                            log::debug!("metrics connection: {e}");
                        }
                    });
                }
                Err(e) => {
                    log::warn!("metrics: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
    Ok(bound)
}

async fn answer(mut stream: TcpStream, metrics: Arc<Mutex<Metrics>>) -> Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    let read = async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_HEAD {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        Ok::<_, std::io::Error>(())
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .map_err(|_| anyhow!("request head timed out"))??;
    let head = String::from_utf8_lossy(&head);
    let (status, ctype, body) = {
        let m = metrics
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        http_response(&head, &m)
    };
    let is_head = head.starts_with("HEAD ");
    let mut resp = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if !is_head {
        resp += &body;
    }
    stream.write_all(resp.as_bytes()).await?;
    stream.shutdown().await?;
    Ok(())
}
