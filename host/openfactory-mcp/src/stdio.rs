//! The stdio transport: newline-delimited JSON-RPC on stdin/stdout, as the
//! local user.
//!
//! [`Lines`] frames the input. Unlike a line codec that fails on a long line
//! or bad bytes (and so ends the session), it always goes on: a line longer
//! than [`MAX_LINE`] is skipped to its newline and reported once, bytes that
//! are not UTF-8 are the parser's to refuse; every line gets an answer.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::{SinkExt, StreamExt};
use openfactory_service::{App, OwnerPolicy};
use openfactory_store::OwnerId;
use rmcp::ServiceExt;
use rmcp::model::ClientJsonRpcMessage;
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio_util::codec::{Decoder, FramedRead};

use crate::{MAX_MESSAGE, jsonrpc, tools};

/// The longest line read: the largest MCP message.
pub const MAX_LINE: usize = MAX_MESSAGE;

/// One line of input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Its bytes, without the newline (and a `\r` before it).
    Line(Bytes),
    /// A line longer than the limit, dropped.
    TooLong,
}

/// Splits a byte stream at newlines; never fails on what the bytes are.
#[derive(Debug)]
pub struct Lines {
    max: usize,
    /// Bytes of the buffer already searched for a newline.
    searched: usize,
    /// Inside a line already too long: dropping to its newline.
    discarding: bool,
}

impl Lines {
    pub fn new(max: usize) -> Self {
        Lines {
            max,
            searched: 0,
            discarding: false,
        }
    }

    fn frame(&mut self, mut line: BytesMut) -> Frame {
        if std::mem::take(&mut self.discarding) || line.len() > self.max {
            return Frame::TooLong;
        }
        if line.last() == Some(&b'\r') {
            line.truncate(line.len() - 1);
        }
        Frame::Line(line.freeze())
    }
}

impl Decoder for Lines {
    type Item = Frame;
    type Error = std::io::Error;

    fn decode(&mut self, buf: &mut BytesMut) -> std::io::Result<Option<Frame>> {
        if let Some(at) = buf[self.searched..].iter().position(|b| *b == b'\n') {
            let mut line = buf.split_to(self.searched + at + 1);
            line.truncate(line.len() - 1);
            self.searched = 0;
            return Ok(Some(self.frame(line)));
        }
        if buf.len() > self.max {
            // No newline within the limit: what is held can only be dropped.
            buf.clear();
            self.discarding = true;
        }
        self.searched = buf.len();
        Ok(None)
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> std::io::Result<Option<Frame>> {
        if let Some(frame) = self.decode(buf)? {
            return Ok(Some(frame));
        }
        self.searched = 0;
        if buf.is_empty() {
            return Ok(std::mem::take(&mut self.discarding).then_some(Frame::TooLong));
        }
        let line = buf.split();
        Ok(Some(self.frame(line)))
    }
}

/// What a line of input is to the session.
#[derive(Debug)]
pub enum Input {
    Message(Box<ClientJsonRpcMessage>),
    /// Nothing to answer.
    Blank,
    /// Not a message: the JSON-RPC error to write back.
    Refused(Value),
}

pub fn read(frame: &Frame) -> Input {
    match frame {
        Frame::Line(line) if line.iter().all(u8::is_ascii_whitespace) => Input::Blank,
        Frame::Line(line) => match jsonrpc::parse(line) {
            Ok(message) => Input::Message(Box::new(message)),
            Err(error) => Input::Refused(error),
        },
        Frame::TooLong => Input::Refused(jsonrpc::error(
            Value::Null,
            jsonrpc::INVALID_REQUEST,
            &format!(
                "message too large: a line of more than {} MiB was dropped; send smaller messages, one per line",
                MAX_LINE >> 20
            ),
        )),
    }
}

/// Serve one MCP session on stdin/stdout (newline-delimited JSON-RPC), as
/// the local user. A line that is not a message is answered with a
/// JSON-RPC error; the session ends when stdin closes.
pub async fn serve_stdio(app: Arc<App>) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let (lines_tx, mut lines_rx) = tokio::sync::mpsc::channel::<String>(64);
    let writer = tokio::spawn(async move {
        let mut stdout = tokio::io::stdout();
        while let Some(line) = lines_rx.recv().await {
            if stdout
                .write_all(format!("{line}\n").as_bytes())
                .await
                .is_err()
                || stdout.flush().await.is_err()
            {
                break;
            }
        }
    });

    let (to_server, from_client) = tokio::sync::mpsc::channel(64);
    let errors = lines_tx.clone();
    tokio::spawn(async move {
        let mut input = FramedRead::new(tokio::io::stdin(), Lines::new(MAX_LINE));
        // Only reading stdin can fail, and then it is closed.
        while let Some(Ok(frame)) = input.next().await {
            let delivered = match read(&frame) {
                Input::Message(message) => to_server.send(*message).await.is_ok(),
                Input::Blank => true,
                Input::Refused(error) => errors.send(error.to_string()).await.is_ok(),
            };
            if !delivered {
                break;
            }
        }
        // stdin closed: dropping `to_server` ends the session.
    });

    let sink = tokio_util::sync::PollSender::new(lines_tx)
        .sink_map_err(|e| std::io::Error::other(e.to_string()))
        .with(|message: rmcp::model::ServerJsonRpcMessage| async move {
            serde_json::to_string(&message).map_err(std::io::Error::other)
        });
    let server = tools::OpenFactoryServer::new(
        app,
        Arc::new(OwnerPolicy::default()),
        Some(OwnerId::local()),
    );
    let running = server
        .serve((
            Box::pin(sink),
            tokio_stream::wrappers::ReceiverStream::new(from_client),
        ))
        .await?;
    running.waiting().await?;
    writer.abort();
    Ok(())
}
