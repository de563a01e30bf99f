//! Kubernetes' WebSocket stream protocol for exec, as kubectl (1.30+) and
//! the official client libraries speak it: binary messages whose first byte
//! names a channel (0 stdin, 1 stdout, 2 stderr, 3 error/status, 4 resize).
//!
//! Subprotocols, preferred first: `v5.channel.k8s.io` (adds channel 255,
//! where `[255, 0]` closes stdin), `v4.channel.k8s.io` (the status on
//! channel 3 is a JSON `Status`, with the exit code as an `ExitCode` cause),
//! and `v3`/`v2.channel.k8s.io` (channel 3 carries an error text only).
//!
//! A session is non-interactive: it collects stdin until the client closes
//! it (v5 only), then runs the command through a starter and relays its
//! output and outcome; kubectl exits with the command's exit code.

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use hyper::header::HeaderMap;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// Channel of the client's stdin.
const STDIN: u8 = 0;
/// Channel of the command's stdout.
const STDOUT: u8 = 1;
/// Channel of the command's stderr.
const STDERR: u8 = 2;
/// Channel of the outcome.
const ERROR: u8 = 3;
/// v5: `[255, stream]` closes that stream.
const CLOSE: u8 = 255;

/// Largest stdin a session collects.
pub(crate) const MAX_STDIN: usize = 16 * 1024 * 1024;
/// Output is sent in messages of at most this size.
const MAX_MESSAGE: usize = 32 * 1024;

/// A negotiated `channel.k8s.io` subprotocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    V5,
    V4,
    V3,
    V2,
}

impl Protocol {
    const PREFERENCE: [Protocol; 4] = [Protocol::V5, Protocol::V4, Protocol::V3, Protocol::V2];

    /// The `Sec-WebSocket-Protocol` value.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Protocol::V5 => "v5.channel.k8s.io",
            Protocol::V4 => "v4.channel.k8s.io",
            Protocol::V3 => "v3.channel.k8s.io",
            Protocol::V2 => "v2.channel.k8s.io",
        }
    }

    /// The best protocol the client offers, if any.
    pub(crate) fn negotiate(headers: &HeaderMap) -> Option<Protocol> {
        let offered: Vec<String> = headers
            .get_all("sec-websocket-protocol")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|p| p.trim().to_string())
            .collect();
        Self::PREFERENCE
            .into_iter()
            .find(|p| offered.iter().any(|o| o == p.name()))
    }

    /// Names of every supported protocol, for error messages.
    pub(crate) fn all_names() -> String {
        Self::PREFERENCE.map(Protocol::name).join(", ")
    }
}

/// Whether `headers` ask for a WebSocket upgrade.
pub(crate) fn is_upgrade(headers: &HeaderMap) -> bool {
    let has = |name: &str, token: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    has("connection", "upgrade") && has("upgrade", "websocket")
}

/// The `Sec-WebSocket-Accept` answer to the request's key.
pub(crate) fn accept_key(headers: &HeaderMap) -> Option<String> {
    let key = headers.get("sec-websocket-key")?;
    Some(tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes()))
}

/// Which streams the client asked for.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Streams {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
}

/// Progress of a running command.
#[derive(Debug)]
pub(crate) enum ExecEvent {
    /// Output on stdout.
    Stdout(Bytes),
    /// Output on stderr.
    Stderr(Bytes),
    /// The command exited with this code.
    Exited(i32),
    /// The command could not run.
    Failed {
        /// HTTP-like code, as in a `Status`.
        code: u16,
        /// `Status.reason`.
        reason: &'static str,
        /// What went wrong.
        message: String,
    },
}

/// The channel-3 message reporting `event` (None: nothing to send).
fn status_message(protocol: Protocol, event: &ExecEvent, command: &[String]) -> Option<Vec<u8>> {
    let body = match (protocol, event) {
        (Protocol::V4 | Protocol::V5, ExecEvent::Exited(0)) => {
            json!({"metadata": {}, "status": "Success"}).to_string()
        }
        (Protocol::V4 | Protocol::V5, ExecEvent::Exited(code)) => {
            // kubectl reads the code as a byte; shells report 128 + signal.
            let code = if (1..=255).contains(code) { *code } else { 255 };
            json!({
                "metadata": {},
                "status": "Failure",
                "message": format!("command terminated with non-zero exit code: error executing command [{}], exit code {code}", command.join(" ")),
                "reason": "NonZeroExitCode",
                "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
            })
            .to_string()
        }
        (Protocol::V4 | Protocol::V5, ExecEvent::Failed { code, reason, message }) => json!({
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "code": code,
        })
        .to_string(),
        (_, ExecEvent::Exited(0)) => return None,
        (_, ExecEvent::Exited(code)) => format!(
            "command terminated with non-zero exit code: error executing command [{}], exit code {code}",
            command.join(" ")
        ),
        (_, ExecEvent::Failed { message, .. }) => message.clone(),
        (_, ExecEvent::Stdout(_) | ExecEvent::Stderr(_)) => return None,
    };
    let mut out = Vec::with_capacity(body.len() + 1);
    out.push(ERROR);
    out.extend_from_slice(body.as_bytes());
    Some(out)
}

fn channel_message(channel: u8, data: &[u8]) -> Message {
    let mut out = Vec::with_capacity(data.len() + 1);
    out.push(channel);
    out.extend_from_slice(data);
    Message::Binary(Bytes::from(out))
}

/// Run one exec session on an upgraded connection: collect stdin (when
/// asked), call `start` with it, relay the events it sends, report the
/// outcome on channel 3 and close. Ends early when the client leaves or
/// `shutdown` turns true.
pub(crate) async fn exec_session<S, F>(
    io: S,
    protocol: Protocol,
    streams: Streams,
    command: Vec<String>,
    start: F,
    mut shutdown: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
    F: FnOnce(Option<Vec<u8>>) -> mpsc::Receiver<ExecEvent>,
{
    let ws = WebSocketStream::from_raw_socket(io, Role::Server, None).await;
    let (mut tx, mut rx) = ws.split();
    let finish = |event: ExecEvent| status_message(protocol, &event, &command);

    // Stdin, until the client closes it.
    let stdin = if streams.stdin {
        if protocol != Protocol::V5 {
            let msg = finish(ExecEvent::Failed {
                code: 400,
                reason: "BadRequest",
                message: format!(
                    "stdin needs the {} protocol (kubectl 1.30 or newer): with {} the end of stdin cannot be signalled",
                    Protocol::V5.name(),
                    protocol.name()
                ),
            });
            close(&mut tx, &mut rx, msg).await;
            return;
        }
        let mut buf = Vec::new();
        loop {
            let msg = tokio::select! {
                m = rx.next() => m,
                _ = shutdown.changed() => {
                    close(&mut tx, &mut rx, finish(shutting_down())).await;
                    return;
                }
            };
            let data = match msg {
                Some(Ok(Message::Binary(d))) => d,
                Some(Ok(Message::Text(t))) => Bytes::copy_from_slice(t.as_bytes()),
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => continue,
            };
            match (data.first(), data.get(1)) {
                (Some(&STDIN), _) => {
                    if buf.len() + data.len() - 1 > MAX_STDIN {
                        let msg = finish(ExecEvent::Failed {
                            code: 413,
                            reason: "RequestEntityTooLarge",
                            message: format!(
                                "stdin is larger than the limit of {MAX_STDIN} bytes for a non-interactive exec"
                            ),
                        });
                        close(&mut tx, &mut rx, msg).await;
                        return;
                    }
                    buf.extend_from_slice(&data[1..]);
                }
                (Some(&CLOSE), Some(&STDIN)) => break,
                _ => {}
            }
        }
        Some(buf)
    } else {
        None
    };

    let mut events = start(stdin);
    loop {
        tokio::select! {
            event = events.recv() => {
                let event = event.unwrap_or(ExecEvent::Failed {
                    code: 500,
                    reason: "InternalError",
                    message: "the exec stream ended without an exit code".into(),
                });
                let (channel, data) = match &event {
                    ExecEvent::Stdout(d) if streams.stdout => (STDOUT, d),
                    ExecEvent::Stderr(d) if streams.stderr => (STDERR, d),
                    ExecEvent::Stdout(_) | ExecEvent::Stderr(_) => continue,
                    ExecEvent::Exited(_) | ExecEvent::Failed { .. } => {
                        close(&mut tx, &mut rx, finish(event)).await;
                        return;
                    }
                };
                for chunk in data.chunks(MAX_MESSAGE) {
                    if tx.send(channel_message(channel, chunk)).await.is_err() {
                        return;
                    }
                }
            }
            msg = rx.next() => match msg {
                // Pings are answered by the stream itself; stdin after its
                // close, resizes and the like have nowhere to go.
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
            _ = shutdown.changed() => {
                close(&mut tx, &mut rx, finish(shutting_down())).await;
                return;
            }
        }
    }
}

fn shutting_down() -> ExecEvent {
    ExecEvent::Failed {
        code: 503,
        reason: "ServiceUnavailable",
        message: "the API server is shutting down".into(),
    }
}

type Sink<S> = futures_util::stream::SplitSink<WebSocketStream<S>, Message>;
type Source<S> = futures_util::stream::SplitStream<WebSocketStream<S>>;

/// Send the status (if any) and a normal close, then wait briefly for the
/// client's close so the connection ends cleanly.
async fn close<S>(tx: &mut Sink<S>, rx: &mut Source<S>, status: Option<Vec<u8>>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if let Some(status) = status {
        if tx.send(Message::Binary(Bytes::from(status))).await.is_err() {
            return;
        }
    }
    let frame = CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    };
    if tx.send(Message::Close(Some(frame))).await.is_err() {
        return;
    }
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), async {
        while let Some(Ok(m)) = rx.next().await {
            if matches!(m, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;
    use std::sync::{Arc, Mutex};

    #[test]
    fn negotiates_the_newest_offered_protocol() {
        let mut h = HeaderMap::new();
        h.insert(
            "sec-websocket-protocol",
            HeaderValue::from_static("v4.channel.k8s.io, v5.channel.k8s.io,v2.channel.k8s.io"),
        );
        assert_eq!(Protocol::negotiate(&h), Some(Protocol::V5));
        h.insert(
            "sec-websocket-protocol",
            HeaderValue::from_static("v4.channel.k8s.io"),
        );
        assert_eq!(Protocol::negotiate(&h), Some(Protocol::V4));
        h.insert(
            "sec-websocket-protocol",
            HeaderValue::from_static("base64.channel.k8s.io"),
        );
        assert_eq!(Protocol::negotiate(&h), None);
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        h.insert("upgrade", HeaderValue::from_static("WebSocket"));
        assert!(is_upgrade(&h));
        h.insert("upgrade", HeaderValue::from_static("SPDY/3.1"));
        assert!(!is_upgrade(&h));
        // RFC 6455's example.
        h.insert(
            "sec-websocket-key",
            HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="),
        );
        assert_eq!(accept_key(&h).unwrap(), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn statuses_match_kubelets() {
        let cmd = vec!["sh".to_string(), "-c".to_string(), "exit 3".to_string()];
        let parse = |m: Vec<u8>| -> serde_json::Value {
            assert_eq!(m[0], ERROR);
            serde_json::from_slice(&m[1..]).unwrap()
        };
        let ok = parse(status_message(Protocol::V5, &ExecEvent::Exited(0), &cmd).unwrap());
        assert_eq!(ok, json!({"metadata": {}, "status": "Success"}));
        let failed = parse(status_message(Protocol::V4, &ExecEvent::Exited(3), &cmd).unwrap());
        assert_eq!(failed["reason"], "NonZeroExitCode");
        assert_eq!(
            failed["details"]["causes"][0],
            json!({"reason": "ExitCode", "message": "3"})
        );
        assert!(status_message(Protocol::V3, &ExecEvent::Exited(0), &cmd).is_none());
        let text = status_message(Protocol::V2, &ExecEvent::Exited(3), &cmd).unwrap();
        assert!(String::from_utf8_lossy(&text).contains("exit code 3"));
    }

    type Client = WebSocketStream<tokio::io::DuplexStream>;

    /// A session over an in-memory pipe; returns the client side and what
    /// the starter received.
    async fn session(
        protocol: Protocol,
        streams: Streams,
        events: Vec<ExecEvent>,
    ) -> (Client, Arc<Mutex<Option<Option<Vec<u8>>>>>) {
        let (a, b) = tokio::io::duplex(1 << 20);
        let seen = Arc::new(Mutex::new(None));
        let seen2 = seen.clone();
        let (_stop_tx, stop) = watch::channel(false);
        tokio::spawn(async move {
            let _keep = _stop_tx;
            exec_session(
                a,
                protocol,
                streams,
                vec!["cmd".into()],
                move |stdin| {
                    *seen2.lock().unwrap() = Some(stdin);
                    let (tx, rx) = mpsc::channel(16);
                    tokio::spawn(async move {
                        for e in events {
                            let _ = tx.send(e).await;
                        }
                    });
                    rx
                },
                stop,
            )
            .await;
        });
        (
            WebSocketStream::from_raw_socket(b, Role::Client, None).await,
            seen,
        )
    }

    /// Everything the server sends until it closes, as (channel, data).
    async fn read_all(client: &mut Client) -> Vec<(u8, Vec<u8>)> {
        let mut out = Vec::new();
        while let Some(Ok(m)) = client.next().await {
            match m {
                Message::Binary(d) => out.push((d[0], d[1..].to_vec())),
                Message::Close(_) => break,
                _ => {}
            }
        }
        out
    }

    #[tokio::test]
    async fn relays_output_and_the_exit_code() {
        let streams = Streams {
            stdin: false,
            stdout: true,
            stderr: true,
        };
        let (mut c, seen) = session(
            Protocol::V5,
            streams,
            vec![
                ExecEvent::Stdout(Bytes::from_static(b"out")),
                ExecEvent::Stderr(Bytes::from_static(b"err")),
                ExecEvent::Exited(2),
            ],
        )
        .await;
        let got = read_all(&mut c).await;
        assert_eq!(got[0], (STDOUT, b"out".to_vec()));
        assert_eq!(got[1], (STDERR, b"err".to_vec()));
        let status: serde_json::Value = serde_json::from_slice(&got[2].1).unwrap();
        assert_eq!(got[2].0, ERROR);
        assert_eq!(status["details"]["causes"][0]["message"], "2");
        assert_eq!(*seen.lock().unwrap(), Some(None));
    }

    #[tokio::test]
    async fn collects_stdin_until_closed_on_v5() {
        let streams = Streams {
            stdin: true,
            stdout: true,
            stderr: false,
        };
        let (mut c, seen) = session(
            Protocol::V5,
            streams,
            vec![
                ExecEvent::Stderr(Bytes::from_static(b"dropped")),
                ExecEvent::Exited(0),
            ],
        )
        .await;
        c.send(channel_message(STDIN, b"hel")).await.unwrap();
        c.send(channel_message(STDIN, b"lo")).await.unwrap();
        c.send(Message::Binary(Bytes::from_static(&[CLOSE, STDIN])))
            .await
            .unwrap();
        let got = read_all(&mut c).await;
        assert_eq!(got.len(), 1, "stderr was not asked for: {got:?}");
        assert_eq!(got[0].0, ERROR);
        assert_eq!(*seen.lock().unwrap(), Some(Some(b"hello".to_vec())));
    }

    #[tokio::test]
    async fn stdin_before_v5_is_refused() {
        let streams = Streams {
            stdin: true,
            stdout: true,
            stderr: true,
        };
        let (mut c, seen) = session(Protocol::V4, streams, vec![]).await;
        let got = read_all(&mut c).await;
        let status: serde_json::Value = serde_json::from_slice(&got[0].1).unwrap();
        assert_eq!(status["status"], "Failure");
        assert!(status["message"]
            .as_str()
            .unwrap()
            .contains("v5.channel.k8s.io"));
        assert!(seen.lock().unwrap().is_none());
    }
}
