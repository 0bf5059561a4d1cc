//! `exec` and `attach`: a process's stdin, stdout and stderr carried over SPDY or a WebSocket.
//!
//! The client asks for the streams it wants (`stdin`/`input`, `stdout`/`output`,
//! `stderr`/`error`, `tty`). Over SPDY (protocols `v4.channel.k8s.io`, and `v5` which is the same
//! over SPDY) it opens one SPDY stream per stream, each with a `streamType` header (`error`,
//! `stdin`, `stdout`, `stderr`, `resize`); over a WebSocket (`v5`/`v4.channel.k8s.io`) every
//! message carries its channel in its first byte (see [`super::websocket`]). Either way the
//! session ends with one JSON `Status` on the error stream — `Success`, or `Failure` with reason
//! `NonZeroExitCode` and a cause `{"reason":"ExitCode","message":"<n>"}` from which kubectl takes
//! its own exit code — and then the streams close.
//!
//! The process side is Docker: `exec` is an exec instance (create, start attached, resize,
//! inspect for the exit code), `attach` attaches to the container's main process.

use std::time::Duration;

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::exec::{StartExecOptions, StartExecResults};
use bollard::models::ExecConfig;
use bollard::query_parameters::{
    AttachContainerOptions, ResizeContainerTTYOptions, ResizeExecOptions,
};
use bytes::Bytes;
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use super::spdy::{self, StreamWriter};
use super::websocket::{self, WsWriter, channel};

/// The exec/attach protocols over SPDY the server accepts, in preference order.
pub const SPDY_PROTOCOLS: &[&str] = &["v5.channel.k8s.io", "v4.channel.k8s.io"];
/// The exec/attach protocols over WebSocket the server accepts, in preference order.
pub const WEBSOCKET_PROTOCOLS: &[&str] = &[websocket::V5_CHANNEL, websocket::V4_CHANNEL];

/// How long the client has to open its SPDY streams (the kubelet's default).
const STREAM_CREATION_TIMEOUT: Duration = Duration::from_secs(30);

/// Which streams the client wants.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
    /// The command (exec only).
    pub command: Vec<String>,
}

impl Options {
    /// From the query: the kubelet's names (`input`, `output`, `error`, `tty`, as kube-apiserver
    /// sends them) or the API's (`stdin`, `stdout`, `stderr`), each `1` or `true`; `command`
    /// repeated.
    pub fn from_query(q: &[(String, String)]) -> Options {
        let flag = |names: &[&str]| {
            q.iter()
                .any(|(k, v)| names.contains(&k.as_str()) && matches!(v.as_str(), "1" | "true"))
        };
        let tty = flag(&["tty"]);
        Options {
            stdin: flag(&["input", "stdin"]),
            stdout: flag(&["output", "stdout"]),
            // A TTY merges stderr into stdout.
            stderr: flag(&["error", "stderr"]) && !tty,
            tty,
            command: q
                .iter()
                .filter(|(k, _)| k == "command")
                .map(|(_, v)| v.clone())
                .collect(),
        }
    }
}

/// What to connect the streams to.
#[derive(Debug, Clone)]
pub enum Action {
    Exec { container_id: String },
    Attach { container_id: String },
}

/// A terminal size from the resize stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct TermSize {
    #[serde(rename = "Width")]
    pub width: u16,
    #[serde(rename = "Height")]
    pub height: u16,
}

/// The v4/v5 Status written on the error stream.
pub fn success_status() -> Value {
    json!({"metadata": {}, "status": "Success"})
}

/// The Status for a process that exited with `code` ≠ 0.
pub fn exit_code_status(command: &[String], code: i64) -> Value {
    json!({
        "metadata": {},
        "status": "Failure",
        "message": format!(
            "command terminated with non-zero exit code: error executing command {command:?}, exit code {code}"
        ),
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
    })
}

/// The Status for an error that is not the process's (kube's InternalError).
pub fn internal_error_status(message: &str) -> Value {
    json!({
        "metadata": {},
        "status": "Failure",
        "message": format!("Internal error occurred: {message}"),
        "reason": "InternalError",
        "details": {"causes": [{"message": message}]},
        "code": 500,
    })
}

/// Where output and the final status go.
enum Output {
    Spdy {
        stdout: Option<StreamWriter>,
        stderr: Option<StreamWriter>,
        error: StreamWriter,
        closer: spdy::Closer,
        /// Ends when the client closes the connection.
        gone: tokio::sync::oneshot::Receiver<()>,
    },
    Ws {
        writer: WsWriter,
    },
}

impl Output {
    async fn write(&self, ch: u8, data: &[u8]) -> bool {
        match self {
            Output::Spdy { stdout, stderr, .. } => {
                let w = if ch == channel::STDERR {
                    stderr
                } else {
                    stdout
                };
                match w {
                    Some(w) => w.write(data).await,
                    None => true,
                }
            }
            Output::Ws { writer } => writer.send(websocket::channel_message(ch, data)).await,
        }
    }

    async fn finish(self, status: Value) {
        let body = serde_json::to_vec(&status).unwrap_or_default();
        match self {
            Output::Spdy {
                stdout,
                stderr,
                error,
                closer,
                gone,
            } => {
                for w in [stdout, stderr].into_iter().flatten() {
                    w.close().await;
                }
                error.write(&body).await;
                error.close().await;
                // Let the client read everything and hang up; then close ourselves.
                let _ = tokio::time::timeout(Duration::from_secs(5), gone).await;
                closer.close().await;
            }
            Output::Ws { writer } => {
                writer
                    .send(websocket::channel_message(channel::ERROR, &body))
                    .await;
                writer.close(1000).await;
            }
        }
    }
}

/// The client's side: stdin and resizes.
struct Input {
    stdin: Option<mpsc::Receiver<Bytes>>,
    resize: mpsc::Receiver<TermSize>,
}

/// Runs exec or attach on an upgraded SPDY connection.
pub async fn serve_spdy<T>(io: T, opts: Options, action: Action, docker: Docker)
where
    T: AsyncRead + AsyncWrite + Send + 'static,
{
    let mut session = match spdy::Session::start(io) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("exec: {e}");
            return;
        }
    };
    let closer = session.closer();
    let (mut error, mut stdin, mut stdout, mut stderr) = (None, None, None, None);
    let (resize_tx, resize_rx) = mpsc::channel(8);
    let mut resize_tx = Some(resize_tx);
    let ready = |e: &Option<_>, i: &Option<_>, o: &Option<_>, r: &Option<_>| {
        e.is_some()
            && (!opts.stdin || i.is_some())
            && (!opts.stdout || o.is_some())
            && (!opts.stderr || r.is_some())
    };
    let deadline = tokio::time::Instant::now() + STREAM_CREATION_TIMEOUT;
    while !ready(&error, &stdin, &stdout, &stderr) {
        let stream = match tokio::time::timeout_at(deadline, session.incoming.recv()).await {
            Ok(Some(s)) => s,
            Ok(None) => return,
            Err(_) => {
                tracing::info!("exec: the client did not open its streams in time");
                closer.close().await;
                return;
            }
        };
        take_stream(
            stream,
            &mut error,
            &mut stdin,
            &mut stdout,
            &mut stderr,
            &mut resize_tx,
        );
    }
    // Streams opened later (a late resize stream) are still taken; the end of `incoming` means
    // the client hung up.
    let (gone_tx, gone_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        while let Some(s) = session.incoming.recv().await {
            // Only a late resize stream is of use now; others are dropped (not read, which
            // would stall the connection).
            let (mut e, mut i, mut o, mut r) = (None, None, None, None);
            take_stream(s, &mut e, &mut i, &mut o, &mut r, &mut resize_tx);
        }
        let _ = gone_tx.send(());
    });
    let Some(error) = error else { return };
    let input = Input {
        stdin: stdin.map(|s: spdy::Stream| s.data),
        resize: resize_rx,
    };
    let output = Output::Spdy {
        stdout: stdout.map(|s: spdy::Stream| s.writer),
        stderr: stderr.map(|s: spdy::Stream| s.writer),
        error: error.writer,
        closer,
        gone: gone_rx,
    };
    run(opts, action, docker, input, output).await;
}

fn take_stream(
    s: spdy::Stream,
    error: &mut Option<spdy::Stream>,
    stdin: &mut Option<spdy::Stream>,
    stdout: &mut Option<spdy::Stream>,
    stderr: &mut Option<spdy::Stream>,
    resize_tx: &mut Option<mpsc::Sender<TermSize>>,
) {
    match s.headers.get("streamtype").unwrap_or("") {
        "error" => *error = Some(s),
        "stdin" => *stdin = Some(s),
        "stdout" => *stdout = Some(s),
        "stderr" => *stderr = Some(s),
        "resize" => {
            if let Some(tx) = resize_tx.take() {
                tokio::spawn(read_resizes(s.data, tx));
            }
        }
        other => tracing::debug!("exec: ignoring a stream of type {other:?}"),
    }
}

/// The resize stream: JSON objects one after another.
async fn read_resizes(mut data: mpsc::Receiver<Bytes>, tx: mpsc::Sender<TermSize>) {
    let mut buf: Vec<u8> = Vec::new();
    while let Some(chunk) = data.recv().await {
        buf.extend_from_slice(&chunk);
        let mut consumed = 0;
        let mut it = serde_json::Deserializer::from_slice(&buf).into_iter::<TermSize>();
        loop {
            match it.next() {
                Some(Ok(size)) => {
                    consumed = it.byte_offset();
                    if tx.send(size).await.is_err() {
                        return;
                    }
                }
                Some(Err(e)) if e.is_eof() => break,
                Some(Err(e)) => {
                    tracing::debug!("exec: a bad resize message: {e}");
                    consumed = buf.len();
                    break;
                }
                None => {
                    consumed = buf.len();
                    break;
                }
            }
        }
        buf.drain(..consumed);
    }
}

/// Runs exec or attach on an upgraded WebSocket with `protocol` (`v5`/`v4.channel.k8s.io`).
pub async fn serve_websocket<T>(
    io: T,
    protocol: &str,
    opts: Options,
    action: Action,
    docker: Docker,
) where
    T: AsyncRead + AsyncWrite + Send + 'static,
{
    let ws = websocket::WsSession::start(io);
    let v5 = protocol == websocket::V5_CHANNEL;
    let (stdin_tx, stdin_rx) = mpsc::channel::<Bytes>(64);
    let (resize_tx, resize_rx) = mpsc::channel::<TermSize>(8);
    let mut incoming = ws.incoming;
    let want_stdin = opts.stdin;
    tokio::spawn(async move {
        let mut stdin_tx = Some(stdin_tx);
        while let Some(msg) = incoming.recv().await {
            let Some((&ch, data)) = msg.split_first() else {
                continue;
            };
            match ch {
                channel::STDIN if want_stdin => {
                    if !data.is_empty()
                        && let Some(tx) = &stdin_tx
                        && tx.send(msg.slice(1..)).await.is_err()
                    {
                        stdin_tx = None;
                    }
                }
                channel::RESIZE => {
                    if let Ok(size) = serde_json::from_slice::<TermSize>(data) {
                        let _ = resize_tx.send(size).await;
                    }
                }
                channel::CLOSE if v5 && data.first() == Some(&channel::STDIN) => stdin_tx = None,
                _ => {}
            }
        }
    });
    let input = Input {
        stdin: if opts.stdin { Some(stdin_rx) } else { None },
        resize: resize_rx,
    };
    run(
        opts,
        action,
        docker,
        input,
        Output::Ws { writer: ws.writer },
    )
    .await;
}

async fn run(opts: Options, action: Action, docker: Docker, input: Input, output: Output) {
    let status = match &action {
        Action::Exec { container_id } => exec(&docker, container_id, &opts, input, &output).await,
        Action::Attach { container_id } => {
            attach(&docker, container_id, &opts, input, &output).await
        }
    };
    output.finish(status).await;
}

async fn exec(docker: &Docker, id: &str, opts: &Options, input: Input, out: &Output) -> Value {
    if opts.command.is_empty() {
        return internal_error_status("error executing command in container: no command given");
    }
    let config = ExecConfig {
        attach_stdin: Some(opts.stdin),
        attach_stdout: Some(opts.stdout),
        attach_stderr: Some(opts.stderr),
        tty: Some(opts.tty),
        cmd: Some(opts.command.clone()),
        ..Default::default()
    };
    let created = match docker.create_exec(id, config).await {
        Ok(c) => c,
        Err(e) => {
            return internal_error_status(&format!(
                "error executing command in container: {}",
                crate::kubelet::docker::message(&e)
            ));
        }
    };
    let start = StartExecOptions {
        detach: false,
        tty: opts.tty,
        output_capacity: None,
    };
    let started = match docker.start_exec(&created.id, Some(start)).await {
        Ok(StartExecResults::Attached { output, input: w }) => (output, w),
        Ok(StartExecResults::Detached) => {
            return internal_error_status("error executing command in container: detached");
        }
        Err(e) => {
            return internal_error_status(&format!(
                "error executing command in container: {}",
                crate::kubelet::docker::message(&e)
            ));
        }
    };
    let exec_id = created.id.clone();
    let resizer = {
        let docker = docker.clone();
        move |size: TermSize| {
            let (docker, exec_id) = (docker.clone(), exec_id.clone());
            async move {
                let o = ResizeExecOptions {
                    h: i32::from(size.height),
                    w: i32::from(size.width),
                };
                if let Err(e) = docker.resize_exec(&exec_id, o).await {
                    tracing::debug!("exec: resize: {e}");
                }
            }
        }
    };
    pump(started.0, started.1, input, out, resizer).await;
    // The output ended: the process exited (the engine may need a moment to record it).
    for _ in 0..50 {
        match docker.inspect_exec(&created.id).await {
            Ok(i) if i.running == Some(true) => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok(i) => {
                return match i.exit_code {
                    Some(0) | None => success_status(),
                    Some(code) => exit_code_status(&opts.command, code),
                };
            }
            Err(e) => {
                return internal_error_status(&format!(
                    "error executing command in container: {}",
                    crate::kubelet::docker::message(&e)
                ));
            }
        }
    }
    success_status()
}

async fn attach(docker: &Docker, id: &str, opts: &Options, input: Input, out: &Output) -> Value {
    let o = AttachContainerOptions {
        stream: true,
        stdin: opts.stdin,
        stdout: opts.stdout,
        stderr: opts.stderr,
        logs: false,
        detach_keys: None,
    };
    let attached = match docker.attach_container(id, Some(o)).await {
        Ok(a) => a,
        Err(e) => {
            return internal_error_status(&format!(
                "error attaching to container: {}",
                crate::kubelet::docker::message(&e)
            ));
        }
    };
    let id = id.to_string();
    let resizer = {
        let docker = docker.clone();
        move |size: TermSize| {
            let (docker, id) = (docker.clone(), id.clone());
            async move {
                let o = ResizeContainerTTYOptions {
                    h: i32::from(size.height),
                    w: i32::from(size.width),
                };
                if let Err(e) = docker.resize_container_tty(&id, o).await {
                    tracing::debug!("attach: resize: {e}");
                }
            }
        }
    };
    pump(attached.output, attached.input, input, out, resizer).await;
    success_status()
}

/// Copies stdin in, output out and resizes through until the output ends.
async fn pump<F, Fut>(
    mut output: std::pin::Pin<
        Box<
            dyn futures_util::Stream<
                    Item = Result<bollard::container::LogOutput, bollard::errors::Error>,
                > + Send,
        >,
    >,
    mut stdin_w: std::pin::Pin<Box<dyn AsyncWrite + Send>>,
    input: Input,
    out: &Output,
    resize: F,
) where
    F: Fn(TermSize) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let Input {
        stdin,
        resize: mut resizes,
    } = input;
    let resizer = tokio::spawn(async move {
        while let Some(size) = resizes.recv().await {
            resize(size).await;
        }
    });
    // Without stdin the writer is kept (unused) until the end: dropping it could end the
    // engine's side of the stream early.
    let mut idle_stdin = None;
    let stdin_task = match stdin {
        Some(mut rx) => Some(tokio::spawn(async move {
            while let Some(chunk) = rx.recv().await {
                if stdin_w.write_all(&chunk).await.is_err() || stdin_w.flush().await.is_err() {
                    return;
                }
            }
            // The client closed stdin: so does the process's.
            let _ = stdin_w.shutdown().await;
        })),
        None => {
            idle_stdin = Some(stdin_w);
            None
        }
    };
    while let Some(item) = output.next().await {
        let ok = match item {
            Ok(LogOutput::StdErr { message }) => out.write(channel::STDERR, &message).await,
            Ok(LogOutput::StdOut { message } | LogOutput::Console { message }) => {
                out.write(channel::STDOUT, &message).await
            }
            Ok(LogOutput::StdIn { .. }) => true,
            Err(e) => {
                tracing::debug!("exec: output: {e}");
                false
            }
        };
        if !ok {
            break;
        }
    }
    resizer.abort();
    if let Some(t) = stdin_task {
        t.abort();
    }
    drop(idle_stdin);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn options_read_both_spellings() {
        let o = Options::from_query(&q(&[
            ("command", "sh"),
            ("command", "-c"),
            ("command", "exit 3"),
            ("input", "1"),
            ("output", "1"),
            ("error", "1"),
        ]));
        assert_eq!(
            o,
            Options {
                stdin: true,
                stdout: true,
                stderr: true,
                tty: false,
                command: vec!["sh".into(), "-c".into(), "exit 3".into()],
            }
        );
        let o = Options::from_query(&q(&[
            ("stdout", "true"),
            ("stderr", "true"),
            ("tty", "true"),
        ]));
        assert!(o.stdout && o.tty && !o.stderr && !o.stdin, "{o:?}");
    }

    #[test]
    fn the_v4_v5_statuses_are_what_kubectl_decodes() {
        assert_eq!(
            success_status(),
            json!({"metadata": {}, "status": "Success"})
        );
        let s = exit_code_status(&["sh".to_string()], 3);
        assert_eq!(s["status"], "Failure");
        assert_eq!(s["reason"], "NonZeroExitCode");
        assert_eq!(
            s["details"]["causes"],
            json!([{"reason": "ExitCode", "message": "3"}])
        );
        let e = internal_error_status("boom");
        assert_eq!(
            (e["reason"].as_str(), e["code"].as_i64()),
            (Some("InternalError"), Some(500))
        );
    }

    #[tokio::test]
    async fn resize_messages_may_be_split_and_joined() {
        let (dtx, drx) = mpsc::channel(8);
        let (tx, mut rx) = mpsc::channel(8);
        tokio::spawn(read_resizes(drx, tx));
        for part in [
            &b"{\"Width\":80,\"Hei"[..],
            b"ght\":24}{\"Width\":100,\"Height\":30}",
        ] {
            dtx.send(Bytes::from_static(part)).await.expect("send");
        }
        drop(dtx);
        assert_eq!(
            rx.recv().await,
            Some(TermSize {
                width: 80,
                height: 24
            })
        );
        assert_eq!(
            rx.recv().await,
            Some(TermSize {
                width: 100,
                height: 30
            })
        );
        assert_eq!(rx.recv().await, None);
    }
}
