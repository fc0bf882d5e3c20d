//! One bounded HTTP/1.1 POST to the collector.
//!
//! Owns: resolving and connecting to the endpoint, sending the request with its headers and
//! `Connection: close`, and reading the status (and a bit of an error body) back, all within
//! the exporter's timeout. TLS is not built in. Does not decide what is sent (`export`).

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Instant;

use super::settings::Exporter;

/// One POST with `Connection: close`, all of it within the exporter's timeout. Returns the
/// status code and, for an error answer, a bit of the body.
pub(super) fn post(
    exporter: &Exporter,
    content_type: &str,
    body: &[u8],
) -> Result<(u16, String), String> {
    let deadline = Instant::now() + exporter.timeout;
    let left = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| format!("timed out after {:?}", exporter.timeout))
    };
    let addrs: Vec<_> = (exporter.host.as_str(), exporter.port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {}: {e}", exporter.host))?
        .collect();
    let mut last_err = format!("{} resolves to no address", exporter.host);
    let mut stream = None;
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, left()?) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last_err = format!("cannot connect to {addr}: {e}"),
        }
    }
    let mut stream = stream.ok_or(last_err)?;
    let host = if exporter.host.contains(':') {
        format!("[{}]:{}", exporter.host, exporter.port)
    } else {
        format!("{}:{}", exporter.host, exporter.port)
    };
    let mut head = format!(
        "POST {} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\nUser-Agent: orchestrate/{}\r\n",
        exporter.path,
        body.len(),
        env!("CARGO_PKG_VERSION")
    );
    for (k, v) in &exporter.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let io = |e: std::io::Error| {
        if matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ) {
            format!("timed out after {:?}", exporter.timeout)
        } else {
            format!("the connection failed: {e}")
        }
    };
    stream.set_write_timeout(Some(left()?)).map_err(io)?;
    stream.write_all(head.as_bytes()).map_err(io)?;
    stream.write_all(body).map_err(io)?;
    stream.flush().map_err(io)?;
    let mut response = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        stream.set_read_timeout(Some(left()?)).map_err(io)?;
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                response.extend_from_slice(&buf[..n]);
                // The status and a little of an error body are all that is needed.
                if response.len() > 64 * 1024 {
                    break;
                }
                if let Some(status) = complete_status(&response)
                    && (200..300).contains(&status)
                {
                    return Ok((status, String::new()));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                if complete_status(&response).is_some() {
                    break;
                }
                return Err(io(e));
            }
        }
    }
    let status = complete_status(&response)
        .ok_or_else(|| "the collector closed the connection without an HTTP answer".to_string())?;
    let text = String::from_utf8_lossy(&response);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.trim())
        .unwrap_or_default();
    let snippet: String = body.chars().take(200).collect();
    Ok((
        status,
        if snippet.is_empty() {
            String::new()
        } else {
            format!(": {snippet}")
        },
    ))
}

/// The status code once the whole header block has arrived.
fn complete_status(response: &[u8]) -> Option<u16> {
    let end = response.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&response[..end]).ok()?;
    let line = head.lines().next()?;
    let mut parts = line.split_whitespace();
    let version = parts.next()?;
    if !version.starts_with("HTTP/") {
        return None;
    }
    parts.next()?.parse().ok()
}
