//! A stand-in for a Consul agent that answers what a test tells it to, and health
//! entries as members register them.
// Each test binary uses part of it.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;

use grain::{Member, MemberId};
use grain_consul::{ConsulConfig, ConsulMembership};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// One canned HTTP answer.
pub(crate) struct Reply {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

impl Reply {
    pub(crate) fn new(status: u16, body: impl Into<Vec<u8>>) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: body.into(),
        }
    }

    pub(crate) fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
}

/// A stand-in Consul agent on a free loopback port: answers each request with
/// `answer(request line)` and sends the request line to `requests`. Lives as long as
/// the test's runtime.
pub(crate) struct StandIn {
    pub(crate) addr: SocketAddr,
    pub(crate) requests: mpsc::UnboundedReceiver<String>,
}

pub(crate) async fn stand_in(answer: impl Fn(&str) -> Reply + Send + Sync + 'static) -> StandIn {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("bind: {e}"));
    let addr = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("local_addr: {e}"));
    let (tx, requests) = mpsc::unbounded_channel();
    let answer = Arc::new(answer);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let answer = answer.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut stream = BufReader::new(stream);
                let mut request_line = String::new();
                if stream.read_line(&mut request_line).await.is_err() {
                    return;
                }
                let mut length = 0usize;
                loop {
                    let mut line = String::new();
                    match stream.read_line(&mut line).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) if line.trim().is_empty() => break,
                        Ok(_) => {
                            if let Some((k, v)) = line.split_once(':')
                                && k.eq_ignore_ascii_case("content-length")
                            {
                                length = v.trim().parse().unwrap_or(0);
                            }
                        }
                    }
                }
                let mut body = vec![0; length];
                if stream.read_exact(&mut body).await.is_err() {
                    return;
                }
                let request_line = request_line.trim().to_string();
                let reply = answer(&request_line);
                let _ = tx.send(request_line);
                let mut head = format!(
                    "HTTP/1.1 {} Stand-in\r\nContent-Length: {}\r\nConnection: close\r\n",
                    reply.status,
                    reply.body.len()
                );
                for (k, v) in &reply.headers {
                    head.push_str(&format!("{k}: {v}\r\n"));
                }
                head.push_str("\r\n");
                let stream = stream.get_mut();
                let _ = stream.write_all(head.as_bytes()).await;
                let _ = stream.write_all(&reply.body).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    StandIn { addr, requests }
}

/// The provider's default settings, pointed at `agent`.
pub(crate) fn config(agent: &StandIn) -> ConsulConfig {
    ConsulConfig {
        address: format!("http://{}", agent.addr),
        ..ConsulConfig::default()
    }
}

/// A provider for the cluster `c` on `agent`.
pub(crate) fn provider(agent: &StandIn) -> ConsulMembership {
    ConsulMembership::new("c", config(agent)).unwrap_or_else(|e| panic!("provider: {e}"))
}

pub(crate) fn member(id: &str) -> Member {
    Member {
        id: MemberId::new(id),
        address: "127.0.0.1:7000".into(),
        kinds: vec!["Fizz".into()],
        incarnation: 1,
    }
}

/// A health entry as a member registers it.
pub(crate) fn entry(id: &str) -> serde_json::Value {
    serde_json::json!({
        "Node": {"Node": "n1", "Address": "127.0.0.1"},
        "Service": {
            "ID": id, "Service": "c", "Tags": ["Fizz"], "Address": "127.0.0.1", "Port": 7000,
            "Meta": {"member_id": id, "cluster": "c", "role": "fizz", "version": "0", "incarnation": "1"}
        },
        "Checks": []
    })
}

/// `[good m1, m2 with null Tags, m3 with null Meta, m4 with Tags "x", "garbage", m5 on
/// port 0]`, index 7.
pub(crate) fn mixed_health(request: &str) -> Reply {
    let mut m2 = entry("m2");
    m2["Service"]["Tags"] = serde_json::Value::Null;
    let mut m3 = entry("m3");
    m3["Service"]["Meta"] = serde_json::Value::Null;
    let mut m4 = entry("m4");
    m4["Service"]["Tags"] = "x".into();
    let mut m5 = entry("m5");
    m5["Service"]["Port"] = 0.into();
    let body = serde_json::json!([entry("m1"), m2, m3, m4, "garbage", m5]);
    if request.starts_with("GET /v1/health/service/c?") {
        Reply::new(200, body.to_string()).header("X-Consul-Index", "7")
    } else {
        Reply::new(404, "no such endpoint")
    }
}
