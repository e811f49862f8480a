//! A tiny HTTP/1.1 client (keep-alive, Content-Length or chunked bodies) for the few
//! JSON calls the benchmarks make, and the request-head parser the floor server uses.

use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::timeout;

pub const HTTP_TIMEOUT: Duration = Duration::from_secs(15);

/// `http://127.0.0.1:8080` or `ws://127.0.0.1:8080/...` -> `127.0.0.1:8080`.
pub fn host_port(url: &str) -> String {
    let rest = url.split("://").nth(1).unwrap_or(url);
    rest.split('/').next().unwrap_or(rest).to_string()
}

/// `ws://h:p` or `http://h:p` -> `http://h:p` (no path).
pub fn http_base(url: &str) -> String {
    format!("http://{}", host_port(url))
}

/// `http://h:p` or `ws://h:p/...` -> `ws://h:p` (no path).
pub fn ws_base(url: &str) -> String {
    format!("ws://{}", host_port(url))
}

pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Response {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One keep-alive connection to one host.
pub struct Conn {
    addr: String,
    stream: Option<BufReader<TcpStream>>,
}

impl Conn {
    pub fn new(base_url: &str) -> Self {
        Conn { addr: host_port(base_url), stream: None }
    }

    async fn connect(&mut self) -> std::io::Result<&mut BufReader<TcpStream>> {
        if self.stream.is_none() {
            let s = timeout(HTTP_TIMEOUT, TcpStream::connect(&self.addr))
                .await
                .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timeout"))??;
            s.set_nodelay(true)?;
            self.stream = Some(BufReader::with_capacity(16 * 1024, s));
        }
        Ok(self.stream.as_mut().expect("just set"))
    }

    /// Sends one request; retries once on a fresh connection if a kept-alive one was closed.
    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        bearer: Option<&str>,
        body: Option<&[u8]>,
    ) -> std::io::Result<Response> {
        let reused = self.stream.is_some();
        match timeout(HTTP_TIMEOUT, self.request_once(method, path, bearer, body)).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) if reused => {
                self.stream = None;
                let _ = e;
                timeout(HTTP_TIMEOUT, self.request_once(method, path, bearer, body)).await.map_err(|_| {
                    self.stream = None;
                    std::io::Error::new(std::io::ErrorKind::TimedOut, "request timeout")
                })?
            }
            Ok(Err(e)) => {
                self.stream = None;
                Err(e)
            }
            Err(_) => {
                self.stream = None;
                Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "request timeout"))
            }
        }
    }

    async fn request_once(
        &mut self,
        method: &str,
        path: &str,
        bearer: Option<&str>,
        body: Option<&[u8]>,
    ) -> std::io::Result<Response> {
        let addr = self.addr.clone();
        let s = self.connect().await?;
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: keep-alive\r\n");
        if let Some(t) = bearer {
            head.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
        let body = body.unwrap_or(&[]);
        if !body.is_empty() || method == "POST" {
            head.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n", body.len()));
        }
        head.push_str("\r\n");
        let mut buf = head.into_bytes();
        buf.extend_from_slice(body);
        let r = async {
            s.get_mut().write_all(&buf).await?;
            read_response(s).await
        }
        .await;
        match r {
            Ok((resp, keep)) => {
                if !keep {
                    self.stream = None;
                }
                Ok(resp)
            }
            Err(e) => {
                self.stream = None;
                Err(e)
            }
        }
    }

    pub async fn post_json(&mut self, path: &str, bearer: Option<&str>, body: &Value) -> std::io::Result<Response> {
        let b = serde_json::to_vec(body).expect("json");
        self.request("POST", path, bearer, Some(&b)).await
    }
}

fn bad(msg: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg.to_string())
}

/// A parsed request or response head.
pub struct Head {
    pub first_line: String,
    pub headers: Vec<(String, String)>,
}

impl Head {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    pub fn content_length(&self) -> usize {
        self.header("content-length").and_then(|v| v.trim().parse().ok()).unwrap_or(0)
    }
}

/// Reads a head (up to the empty line); `Ok(None)` on a clean EOF before any byte.
pub async fn read_head<R: AsyncBufReadExt + Unpin>(r: &mut R) -> std::io::Result<Option<Head>> {
    let mut first_line = String::new();
    if r.read_line(&mut first_line).await? == 0 {
        return Ok(None);
    }
    let mut headers = Vec::new();
    let mut total = first_line.len();
    loop {
        let mut line = String::new();
        let n = r.read_line(&mut line).await?;
        if n == 0 {
            return Err(bad("eof in head"));
        }
        total += n;
        if total > 64 * 1024 {
            return Err(bad("head too large"));
        }
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    Ok(Some(Head { first_line: first_line.trim_end().to_string(), headers }))
}

async fn read_response(s: &mut BufReader<TcpStream>) -> std::io::Result<(Response, bool)> {
    let head = read_head(s).await?.ok_or_else(|| bad("connection closed"))?;
    let status: u16 =
        head.first_line.split_whitespace().nth(1).and_then(|c| c.parse().ok()).ok_or_else(|| bad("bad status line"))?;
    let keep = !head.header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
    let chunked = head.header("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    let mut body = Vec::new();
    if chunked {
        loop {
            let mut line = String::new();
            s.read_line(&mut line).await?;
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or("0"), 16)
                .map_err(|_| bad("bad chunk size"))?;
            if size == 0 {
                let mut end = String::new();
                s.read_line(&mut end).await?;
                break;
            }
            let start = body.len();
            body.resize(start + size, 0);
            s.read_exact(&mut body[start..]).await?;
            let mut crlf = [0u8; 2];
            s.read_exact(&mut crlf).await?;
        }
    } else if let Some(len) = head.header("content-length").and_then(|v| v.trim().parse::<usize>().ok()) {
        body.resize(len, 0);
        s.read_exact(&mut body).await?;
    } else if status != 204 && status != 304 && !(100..200).contains(&status) {
        s.read_to_end(&mut body).await?;
        return Ok((Response { status, body }, false));
    }
    Ok((Response { status, body }, keep))
}
