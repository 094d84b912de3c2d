//! A small client for the QEMU guest agent (`qemu-guest-agent` inside the
//! guest, reached over the VM's virtio-serial channel): the
//! `guest-sync-delimited` handshake, then one command at a time.
//!
//! The handshake matters: the channel outlives connections, so a reply meant
//! for an earlier client may still be in it. The agent answers a sync with a
//! 0xFF byte and then our own id; everything before that is discarded.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("the guest agent channel: {0}")]
    Io(#[from] std::io::Error),
    #[error(
        "the guest agent did not answer within {0:?} (is the guest still booting, or without qemu-guest-agent?)"
    )]
    Timeout(Duration),
    #[error("the guest agent closed the channel")]
    Closed,
    #[error("the guest agent sent something that is not JSON: {0}")]
    Protocol(String),
    #[error("guest agent command `{command}` failed: {desc}")]
    Command { command: String, desc: String },
}

/// The `return` of a reply, or its error as [`AgentError::Command`].
pub fn reply_value(command: &str, reply: Value) -> Result<Value, AgentError> {
    if let Some(ret) = reply.get("return") {
        return Ok(ret.clone());
    }
    match reply.get("error") {
        Some(error) => Err(AgentError::Command {
            command: command.to_owned(),
            desc: error["desc"]
                .as_str()
                .or(error["class"].as_str())
                .unwrap_or("unknown error")
                .to_owned(),
        }),
        None => Err(AgentError::Protocol(reply.to_string())),
    }
}

pub struct Agent {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

impl Agent {
    /// Connect and synchronise within `timeout`.
    pub async fn connect(socket: &Path, timeout: Duration) -> Result<Agent, AgentError> {
        tokio::time::timeout(timeout, Self::connect_now(socket))
            .await
            .map_err(|_| AgentError::Timeout(timeout))?
    }

    async fn connect_now(socket: &Path) -> Result<Agent, AgentError> {
        let (read, writer) = UnixStream::connect(socket).await?.into_split();
        let mut agent = Agent {
            reader: BufReader::new(read),
            writer,
        };
        // A random id (within JSON's exact integers): a reply to an earlier
        // connection's sync, still in the channel, never matches it.
        let id = sync_id();
        // 0xFF resets the agent's parser, in case a partial request is pending.
        agent.writer.write_all(&[0xFF]).await?;
        agent
            .send(&json!({"execute": "guest-sync-delimited", "arguments": {"id": id}}))
            .await?;
        loop {
            // Skip to the delimiter, then read the line after it.
            loop {
                let byte = agent.reader.read_u8().await.map_err(|e| {
                    if e.kind() == std::io::ErrorKind::UnexpectedEof {
                        AgentError::Closed
                    } else {
                        e.into()
                    }
                })?;
                if byte == 0xFF {
                    break;
                }
            }
            let reply = agent.read_line().await?;
            if reply.get("return").and_then(Value::as_u64) == Some(id) {
                return Ok(agent);
            }
        }
    }

    async fn send(&mut self, request: &Value) -> Result<(), AgentError> {
        let mut bytes = serde_json::to_vec(request).expect("serialisable");
        bytes.push(b'\n');
        self.writer.write_all(&bytes).await?;
        Ok(())
    }

    async fn read_line(&mut self) -> Result<Value, AgentError> {
        let mut line = String::new();
        if self.reader.read_line(&mut line).await? == 0 {
            return Err(AgentError::Closed);
        }
        let line = line.trim_start_matches('\u{FFFD}').trim();
        serde_json::from_str(line)
            .map_err(|_| AgentError::Protocol(line.chars().take(200).collect()))
    }

    /// Run one command (`{"execute": …, "arguments": …}`); its `return`.
    pub async fn execute(
        &mut self,
        request: &Value,
        timeout: Duration,
    ) -> Result<Value, AgentError> {
        let command = request["execute"].as_str().unwrap_or("?").to_owned();
        self.send(request).await?;
        let reply = tokio::time::timeout(timeout, self.read_line())
            .await
            .map_err(|_| AgentError::Timeout(timeout))??;
        reply_value(&command, reply)
    }
}

fn sync_id() -> u64 {
    getrandom::u64().expect("the OS has randomness") & ((1 << 53) - 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::UnixListener;

    /// An agent as qemu-ga behaves, with a stale reply left in the channel.
    async fn fake_agent(listener: UnixListener) {
        let (stream, _) = listener.accept().await.unwrap();
        let (read, mut write) = stream.into_split();
        let mut read = BufReader::new(read);
        write
            .write_all(b"{\"return\": {\"pid\": 1}}\n")
            .await
            .unwrap();
        let mut line = Vec::new();
        loop {
            line.clear();
            if read.read_until(b'\n', &mut line).await.unwrap() == 0 {
                return;
            }
            let text = String::from_utf8_lossy(&line);
            let request: Value =
                serde_json::from_str(text.trim_start_matches('\u{FFFD}').trim()).unwrap();
            let answer = match request["execute"].as_str().unwrap() {
                "guest-sync-delimited" => {
                    write.write_all(&[0xFF]).await.unwrap();
                    json!({"return": request["arguments"]["id"]})
                }
                "guest-ping" => json!({"return": {}}),
                other => {
                    json!({"error": {"class": "CommandNotFound", "desc": format!("Command {other} has been disabled")}})
                }
            };
            let mut bytes = serde_json::to_vec(&answer).unwrap();
            bytes.push(b'\n');
            write.write_all(&bytes).await.unwrap();
        }
    }

    #[tokio::test]
    async fn sync_skips_stale_replies_and_commands_answer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("qga.sock");
        tokio::spawn(fake_agent(UnixListener::bind(&path).unwrap()));
        let mut agent = Agent::connect(&path, Duration::from_secs(5)).await.unwrap();
        let ping = agent
            .execute(&json!({"execute": "guest-ping"}), Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(ping, json!({}));
        let err = agent
            .execute(
                &json!({"execute": "guest-file-open"}),
                Duration::from_secs(5),
            )
            .await
            .unwrap_err();
        assert!(err.to_string().contains("has been disabled"), "{err}");
    }

    #[tokio::test]
    async fn a_silent_agent_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("qga.sock");
        let listener = UnixListener::bind(&path).unwrap();
        tokio::spawn(async move {
            let (_stream, _) = listener.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(10)).await;
        });
        let err = Agent::connect(&path, Duration::from_millis(300))
            .await
            .err()
            .unwrap();
        assert!(matches!(err, AgentError::Timeout(_)), "{err}");
    }
}
