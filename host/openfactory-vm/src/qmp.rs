//! A small QMP client: the greeting, `qmp_capabilities`, then one command at
//! a time over the VM's unix socket. Events that arrive in between are skipped.
//! The timeout bounds each whole call (connecting, a command and every event
//! read before its answer), so a QEMU that streams events and never answers
//! still times out.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    #[error("QMP socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("QMP did not answer within {0:?}")]
    Timeout(Duration),
    #[error("QMP closed the connection")]
    Closed,
    #[error("QMP sent something that is not JSON: {0}")]
    Protocol(String),
    #[error("QMP command `{command}` failed: {class}: {desc}")]
    Command {
        command: String,
        class: String,
        desc: String,
    },
}

pub struct Qmp {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    timeout: Duration,
}

impl Qmp {
    /// Connect and negotiate capabilities.
    pub async fn connect(socket: &Path, timeout: Duration) -> Result<Qmp, QmpError> {
        tokio::time::timeout(timeout, async {
            let (read, writer) = UnixStream::connect(socket).await?.into_split();
            let mut qmp = Qmp {
                reader: BufReader::new(read),
                writer,
                timeout,
            };
            let greeting = qmp.read_message().await?;
            if greeting.get("QMP").is_none() {
                return Err(QmpError::Protocol(format!("no greeting: {greeting}")));
            }
            qmp.call("qmp_capabilities", None).await?;
            Ok(qmp)
        })
        .await
        .map_err(|_| QmpError::Timeout(timeout))?
    }

    async fn read_message(&mut self) -> Result<Value, QmpError> {
        let mut line = String::new();
        let n = self.reader.read_line(&mut line).await?;
        if n == 0 {
            return Err(QmpError::Closed);
        }
        serde_json::from_str(&line)
            .map_err(|_| QmpError::Protocol(line.trim().chars().take(200).collect()))
    }

    /// Run one command; its `return` value.
    pub async fn execute(
        &mut self,
        command: &str,
        arguments: Option<Value>,
    ) -> Result<Value, QmpError> {
        let timeout = self.timeout;
        tokio::time::timeout(timeout, self.call(command, arguments))
            .await
            .map_err(|_| QmpError::Timeout(timeout))?
    }

    async fn call(&mut self, command: &str, arguments: Option<Value>) -> Result<Value, QmpError> {
        let mut request = json!({ "execute": command });
        if let Some(arguments) = arguments {
            request["arguments"] = arguments;
        }
        let mut bytes = serde_json::to_vec(&request).expect("serialisable");
        bytes.push(b'\n');
        self.writer.write_all(&bytes).await?;
        loop {
            let message = self.read_message().await?;
            if let Some(ret) = message.get("return") {
                return Ok(ret.clone());
            }
            if let Some(error) = message.get("error") {
                return Err(QmpError::Command {
                    command: command.to_owned(),
                    class: error["class"].as_str().unwrap_or("").to_owned(),
                    desc: error["desc"].as_str().unwrap_or("").to_owned(),
                });
            }
            // An event ({"event": …}); not ours to answer.
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::UnixListener;

    /// A QMP peer that speaks the protocol as QEMU does, events included.
    async fn fake_qemu(listener: UnixListener) {
        let (stream, _) = listener.accept().await.unwrap();
        let (read, mut write) = stream.into_split();
        let mut lines = BufReader::new(read).lines();
        write
            .write_all(b"{\"QMP\": {\"version\": {}, \"capabilities\": []}}\n")
            .await
            .unwrap();
        while let Some(line) = lines.next_line().await.unwrap() {
            let request: Value = serde_json::from_str(&line).unwrap();
            let answer = match request["execute"].as_str().unwrap() {
                "qmp_capabilities" => json!({"return": {}}),
                "query-status" => {
                    write
                        .write_all(b"{\"event\": \"RTC_CHANGE\", \"data\": {}}\n")
                        .await
                        .unwrap();
                    json!({"return": {"status": "running", "running": true}})
                }
                other => {
                    json!({"error": {"class": "CommandNotFound", "desc": format!("The command {other} has not been found")}})
                }
            };
            let mut bytes = serde_json::to_vec(&answer).unwrap();
            bytes.push(b'\n');
            write.write_all(&bytes).await.unwrap();
        }
    }

    #[tokio::test]
    async fn commands_answer_and_events_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("qmp.sock");
        let listener = UnixListener::bind(&path).unwrap();
        tokio::spawn(fake_qemu(listener));
        let mut qmp = Qmp::connect(&path, Duration::from_secs(5)).await.unwrap();
        let status = qmp.execute("query-status", None).await.unwrap();
        assert_eq!(status["status"], "running");
        let err = qmp.execute("bogus", None).await.unwrap_err();
        assert!(err.to_string().contains("CommandNotFound"), "{err}");
    }

    /// A QEMU that greets, then sends events without end and answers nothing.
    async fn chatty_qemu(listener: UnixListener) {
        let (stream, _) = listener.accept().await.unwrap();
        let (_read, mut write) = stream.into_split();
        write
            .write_all(b"{\"QMP\": {\"version\": {}, \"capabilities\": []}}\n")
            .await
            .unwrap();
        loop {
            if write
                .write_all(b"{\"event\": \"RTC_CHANGE\", \"data\": {}}\n")
                .await
                .is_err()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn a_flood_of_events_does_not_keep_a_call_waiting() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("qmp.sock");
        let listener = UnixListener::bind(&path).unwrap();
        tokio::spawn(chatty_qemu(listener));
        let started = std::time::Instant::now();
        // Events arrive every 5 ms, well within the timeout each; the call still ends.
        let err = Qmp::connect(&path, Duration::from_millis(300))
            .await
            .err()
            .expect("no answer to qmp_capabilities");
        assert!(matches!(err, QmpError::Timeout(_)), "{err}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
    }
}
