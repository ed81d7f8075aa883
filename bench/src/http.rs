//! A closed-loop HTTP/1.1 load generator for the prediction endpoints: each connection sends one
//! request, waits for the whole answer, and sends the next, over one kept-alive socket. On one
//! thread (a current-thread runtime), so the client costs as little of the 2 cores as it can.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What one run measured.
pub struct Load {
    pub connections: usize,
    pub requests: usize,
    pub errors: usize,
    pub seconds: f64,
    /// Latencies of the requests answered 200, microseconds, sorted.
    pub latencies: Vec<u32>,
}

impl Load {
    fn quantile(&self, q: f64) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        let i = ((self.latencies.len() as f64 - 1.0) * q).round() as usize;
        f64::from(self.latencies[i]) / 1000.0
    }

    /// `{"connections", "requests", "errors", "rps", "p50_ms", "p99_ms"}` on one line.
    pub fn json(&self) -> String {
        format!(
            "{{\"connections\": {}, \"requests\": {}, \"errors\": {}, \"rps\": {:.1}, \"p50_ms\": {:.3}, \"p99_ms\": {:.3}, \"p999_ms\": {:.3}}}",
            self.connections,
            self.requests,
            self.errors,
            self.requests as f64 / self.seconds,
            self.quantile(0.5),
            self.quantile(0.99),
            self.quantile(0.999),
        )
    }
}

/// Reads one response from `stream` (Content-Length bodies); returns its status.
async fn response(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> Result<u16> {
    buffer.clear();
    let mut chunk = [0u8; 16 * 1024];
    let head_end = loop {
        if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            bail!("the server closed the connection");
        }
        buffer.extend_from_slice(&chunk[..n]);
    };
    let head = std::str::from_utf8(&buffer[..head_end]).context("response head")?;
    let status: u16 = head.split(' ').nth(1).and_then(|s| s.parse().ok()).context("status line")?;
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case("content-length").then(|| v.trim().parse().ok())?
        })
        .context("the response has no Content-Length")?;
    while buffer.len() < head_end + length {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            bail!("the server closed the connection mid-body");
        }
        buffer.extend_from_slice(&chunk[..n]);
    }
    Ok(status)
}

/// Runs `connections` closed-loop clients for `warmup` (not counted) then `seconds`.
pub async fn run(address: &str, request: Vec<u8>, connections: usize, warmup: f64, seconds: f64) -> Result<Load> {
    let start = Instant::now() + Duration::from_secs_f64(warmup);
    let end = start + Duration::from_secs_f64(seconds);
    let request = std::sync::Arc::new(request);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..connections {
        let (address, request) = (address.to_string(), request.clone());
        tasks.spawn_local(async move {
            let mut stream = TcpStream::connect(&address).await?;
            stream.set_nodelay(true)?;
            let (mut latencies, mut errors) = (Vec::new(), 0usize);
            let mut buffer = Vec::with_capacity(4096);
            loop {
                let sent = Instant::now();
                if sent >= end {
                    break;
                }
                stream.write_all(&request).await?;
                let status = response(&mut stream, &mut buffer).await?;
                if sent >= start {
                    match status {
                        200 => latencies.push(sent.elapsed().as_micros().min(u128::from(u32::MAX)) as u32),
                        _ => errors += 1,
                    }
                }
            }
            Ok::<_, anyhow::Error>((latencies, errors))
        });
    }
    let mut load = Load { connections, requests: 0, errors: 0, seconds, latencies: Vec::new() };
    while let Some(done) = tasks.join_next().await {
        let (latencies, errors) = done??;
        load.requests += latencies.len();
        load.errors += errors;
        load.latencies.extend(latencies);
    }
    load.latencies.sort_unstable();
    Ok(load)
}

/// The bytes of `POST path` with a JSON body, kept alive.
pub fn post(host: &str, path: &str, headers: &[String], body: &str) -> Vec<u8> {
    let extra: String = headers.iter().map(|h| format!("{h}\r\n")).collect();
    format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\n{extra}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}
