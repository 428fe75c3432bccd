//! The provider against a stand-in for Consul that answers what a test tells it to: no
//! reply, however odd, makes it panic; a bad entry costs only that entry.

use std::net::SocketAddr;
use std::sync::Arc;

use grain::membership::{MembershipError, MembershipProvider};
use grain::{Member, MemberId};
use grain_consul::{ConsulConfig, ConsulMembership};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// One canned HTTP answer.
struct Reply {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn new(status: u16, body: impl Into<Vec<u8>>) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: body.into(),
        }
    }
}

/// A stand-in Consul agent on a free loopback port: answers each request with
/// `answer(request line)` and sends the request line to `requests`. Lives as long as
/// the test's runtime.
struct StandIn {
    addr: SocketAddr,
    requests: mpsc::UnboundedReceiver<String>,
}

async fn stand_in(answer: impl Fn(&str) -> Reply + Send + Sync + 'static) -> StandIn {
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

fn provider(agent: &StandIn) -> ConsulMembership {
    let config = ConsulConfig {
        address: format!("http://{}", agent.addr),
        ..ConsulConfig::default()
    };
    ConsulMembership::new("c", config).unwrap_or_else(|e| panic!("provider: {e}"))
}

fn member(id: &str) -> Member {
    Member {
        id: MemberId::new(id),
        address: "127.0.0.1:7000".into(),
        kinds: vec!["Fizz".into()],
        incarnation: 1,
    }
}

#[tokio::test]
async fn an_error_body_is_cut_on_a_character_boundary_not_inside_one() {
    // 499 ASCII bytes, then two-byte characters: byte 500 is inside the first 'é'.
    let body = format!("{}{}", "a".repeat(499), "é".repeat(100));
    let mut agent = stand_in(move |_| Reply::new(400, body.clone())).await;
    let answer = provider(&agent).register(&member("m1")).await;
    let request = agent.requests.recv().await.unwrap_or_default();
    assert!(
        request.starts_with("PUT /v1/agent/service/register"),
        "{request}"
    );
    match answer {
        Err(MembershipError::Rejected(msg)) => {
            assert!(
                msg.contains(&format!("{}… (cut)", "a".repeat(499))),
                "{msg}"
            );
            assert!(!msg.contains('é'), "{msg}");
        }
        other => panic!("expected Rejected, got {other:?}"),
    }
    // The same on a 500 (keep-alive reads the body to tell "not registered" apart).
    let body = format!("{}{}", "a".repeat(499), "é".repeat(100));
    let agent = stand_in(move |_| Reply::new(500, body.clone())).await;
    let r = provider(&agent).keep_alive(&MemberId::new("m1")).await;
    assert!(
        matches!(&r, Err(MembershipError::Unavailable(m)) if m.contains("… (cut)")),
        "{r:?}"
    );
}
