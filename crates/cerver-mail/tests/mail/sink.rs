//! Just enough of an SMTP server to receive a message: 220 greeting, EHLO/HELO 250 (no
//! extensions, so no STARTTLS and no AUTH), MAIL/RCPT 250, DATA 354 then the lines up to ".",
//! 250, QUIT 221. Listens on 127.0.0.1 only.

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// One message as the sink received it.
#[derive(Debug, Default)]
pub struct Received {
    pub mail_from: String,
    pub rcpt_to: Vec<String>,
    /// The DATA section with dot-stuffing undone, CRLF line ends kept.
    pub data: Vec<u8>,
}

pub struct Sink {
    pub port: u16,
    pub received: mpsc::UnboundedReceiver<Received>,
}

pub async fn start() -> Sink {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, received) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let _ = session(socket, tx).await;
            });
        }
    });
    Sink { port, received }
}

async fn session(socket: TcpStream, tx: mpsc::UnboundedSender<Received>) -> std::io::Result<()> {
    let (reader, mut writer) = socket.into_split();
    let mut reader = BufReader::new(reader);
    writer.write_all(b"220 sink.test ESMTP ready\r\n").await?;
    let mut current = Received::default();
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line).await? == 0 {
            return Ok(());
        }
        let command = String::from_utf8_lossy(&line).trim_end().to_string();
        let verb = command
            .split([' ', ':'])
            .next()
            .unwrap_or("")
            .to_ascii_uppercase();
        let reply: &[u8] = match verb.as_str() {
            "EHLO" | "HELO" => b"250 sink.test\r\n",
            "MAIL" => {
                current.mail_from = command["MAIL FROM:".len().min(command.len())..].to_string();
                b"250 sender ok\r\n"
            }
            "RCPT" => {
                current
                    .rcpt_to
                    .push(command["RCPT TO:".len().min(command.len())..].to_string());
                b"250 recipient ok\r\n"
            }
            "DATA" => {
                writer
                    .write_all(b"354 end data with <CR><LF>.<CR><LF>\r\n")
                    .await?;
                loop {
                    line.clear();
                    if reader.read_until(b'\n', &mut line).await? == 0 {
                        return Ok(());
                    }
                    if line == b".\r\n" || line == b".\n" {
                        break;
                    }
                    let unstuffed = line.strip_prefix(b".").unwrap_or(&line);
                    current.data.extend_from_slice(unstuffed);
                }
                let _ = tx.send(std::mem::take(&mut current));
                b"250 queued\r\n"
            }
            "RSET" => {
                current = Received::default();
                b"250 ok\r\n"
            }
            "NOOP" => b"250 ok\r\n",
            "QUIT" => {
                writer.write_all(b"221 bye\r\n").await?;
                return Ok(());
            }
            _ => b"502 command not implemented\r\n",
        };
        writer.write_all(reply).await?;
    }
}
