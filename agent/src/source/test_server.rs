//! A small HTTP/1.1 server on 127.0.0.1 for download tests. It writes raw
//! responses, so a test can send what a well-behaved server would not: a
//! body shorter than its `Content-Length`, or no response at all.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A request as the server read it; header names are lowercase.
#[derive(Clone, Debug)]
pub struct Request {
    pub path: String,
    pub headers: Vec<(String, String)>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        let mut headers = self.headers.iter();
        let found = headers.find(|(key, _)| key == name)?;
        Some(found.1.as_str())
    }
}

/// What the server writes back.
#[derive(Clone, Debug)]
pub enum Reply {
    /// A response with a correct `Content-Length`.
    Full {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// Declares `declared` bytes, sends `body` (shorter), then closes.
    Truncated { declared: usize, body: Vec<u8> },
    /// No `Content-Length`: the body ends when the connection closes.
    UntilClose { body: Vec<u8> },
    /// Reads the request and sends nothing until the server stops.
    Stall,
}

impl Reply {
    pub fn status(status: u16, body: &str) -> Reply {
        Reply::Full {
            status,
            headers: Vec::new(),
            body: body.as_bytes().to_vec(),
        }
    }

    /// Builds a 200 with an `ETag` and a `Last-Modified`.
    pub fn ok(body: &str, etag: &str) -> Reply {
        Reply::Full {
            status: 200,
            headers: vec![
                ("ETag".to_owned(), etag.to_owned()),
                (
                    "Last-Modified".to_owned(),
                    "Thu, 01 Jan 2026 00:00:00 GMT".to_owned(),
                ),
            ],
            body: body.as_bytes().to_vec(),
        }
    }

    pub fn with_header(mut self, name: &str, value: &str) -> Reply {
        if let Reply::Full { headers, .. } = &mut self {
            headers.push((name.to_owned(), value.to_owned()));
        }
        self
    }
}

type Handler = Box<dyn FnMut(&Request) -> Reply + Send>;

struct Shared {
    handler: Mutex<Handler>,
    requests: Mutex<Vec<Request>>,
    stopping: AtomicBool,
}

/// The server; it stops when dropped.
pub struct TestServer {
    address: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
    tls: Option<Arc<rustls::ServerConfig>>,
}

impl TestServer {
    pub fn start(handler: impl FnMut(&Request) -> Reply + Send + 'static) -> TestServer {
        TestServer::start_inner(Box::new(handler), None)
    }

    /// Starts a server that speaks TLS with `config`.
    pub fn start_tls(
        config: rustls::ServerConfig,
        handler: impl FnMut(&Request) -> Reply + Send + 'static,
    ) -> TestServer {
        TestServer::start_inner(Box::new(handler), Some(Arc::new(config)))
    }

    fn start_inner(handler: Handler, tls: Option<Arc<rustls::ServerConfig>>) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            handler: Mutex::new(handler),
            requests: Mutex::new(Vec::new()),
            stopping: AtomicBool::new(false),
        });
        let accept = {
            let shared = Arc::clone(&shared);
            let tls = tls.clone();
            std::thread::spawn(move || accept_loop(listener, shared, tls))
        };
        TestServer {
            address,
            shared,
            accept: Some(accept),
            tls,
        }
    }

    /// Returns the URL of `path` on this server.
    pub fn url(&self, path: &str) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}{path}", self.address)
    }

    /// Replaces the handler for the requests that follow.
    pub fn set_handler(&self, handler: impl FnMut(&Request) -> Reply + Send + 'static) {
        *self.shared.handler.lock().unwrap() = Box::new(handler);
    }

    pub fn requests(&self) -> Vec<Request> {
        self.shared.requests.lock().unwrap().clone()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        // Wakes the blocking accept, which then reads the flag.
        let _ = TcpStream::connect(self.address);
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>, tls: Option<Arc<rustls::ServerConfig>>) {
    for stream in listener.incoming() {
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        let Ok(stream) = stream else { continue };
        let shared = Arc::clone(&shared);
        let tls = tls.clone();
        std::thread::spawn(move || {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
            match tls {
                Some(config) => {
                    let connection = rustls::ServerConnection::new(config).unwrap();
                    serve(rustls::StreamOwned::new(connection, stream), &shared);
                }
                None => serve(stream, &shared),
            }
        });
    }
}

/// Serves requests on one connection until the client closes it or a reply
/// ends it.
fn serve<S: Read + Write>(stream: S, shared: &Shared) {
    let mut reader = BufReader::new(stream);
    while let Some(request) = read_request(&mut reader) {
        shared.requests.lock().unwrap().push(request.clone());
        let reply = (shared.handler.lock().unwrap())(&request);
        let keep_open = write_reply(reader.get_mut(), reply, shared);
        if !keep_open {
            return;
        }
    }
}

fn read_request(reader: &mut impl BufRead) -> Option<Request> {
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let path = line.split_whitespace().nth(1)?.to_owned();
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let line = line.trim_end();
        if line.is_empty() {
            return Some(Request { path, headers });
        }
        let (name, value) = line.split_once(':')?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
}

/// Writes `reply`; returns whether the connection stays open.
fn write_reply(stream: &mut impl Write, reply: Reply, shared: &Shared) -> bool {
    match reply {
        Reply::Full {
            status,
            headers,
            body,
        } => {
            let mut head = format!("HTTP/1.1 {status} {}\r\n", reason(status));
            for (name, value) in headers {
                head.push_str(&format!("{name}: {value}\r\n"));
            }
            head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
            let written =
                stream.write_all(head.as_bytes()).is_ok() && stream.write_all(&body).is_ok();
            written && stream.flush().is_ok()
        }
        Reply::Truncated { declared, body } => {
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {declared}\r\n\r\n");
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(&body);
            let _ = stream.flush();
            false
        }
        Reply::UntilClose { body } => {
            let head = "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n";
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(&body);
            let _ = stream.flush();
            false
        }
        Reply::Stall => {
            let until = Instant::now() + Duration::from_secs(10);
            while !shared.stopping.load(Ordering::SeqCst) && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(10));
            }
            false
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        304 => "Not Modified",
        404 => "Not Found",
        429 => "Too Many Requests",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}
