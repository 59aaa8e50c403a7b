//! Outgoing mail: verification and reset links, and account notices.
//!
//! With `[mail.smtp]` configured, mail goes through SMTP with TLS (lettre); otherwise each
//! message is written as an `.eml` file into the outbox directory, which is how `zonegate dev`
//! and the tests read their mail. Links are built by the caller from the configured public
//! origin only.

pub mod outbox;

use std::path::PathBuf;

pub use outbox::{Mail, Outbox};

use lettre::message::header::{ContentTransferEncoding, ContentType};
use lettre::message::{Body, Mailbox, Message};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncFileTransport, AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("mail address `{0}` is invalid")]
    Address(String),
    #[error("building the message failed")]
    Build,
    #[error("sending mail failed: {0}")]
    Send(String),
}

/// SMTP settings; the password comes from the environment, never the config file.
#[derive(Debug, Clone)]
pub struct SmtpSettings {
    pub host: String,
    pub port: u16,
    pub username: Option<String>,
    /// The environment variable holding the password (read when the gateway starts).
    pub password_env: Option<String>,
    /// Or the file holding it.
    pub password_file: Option<std::path::PathBuf>,
}

enum Transport {
    Outbox(AsyncFileTransport<Tokio1Executor>),
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
}

/// Sends mail through the configured transport.
pub struct Mailer {
    from: Mailbox,
    transport: Transport,
    outbox: Option<PathBuf>,
    /// Why the last delivery failed, until one succeeds (readiness shows it).
    last_failure: std::sync::Mutex<Option<String>>,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailer")
            .field("from", &self.from.to_string())
            .field("outbox", &self.outbox)
            .finish_non_exhaustive()
    }
}

impl Mailer {
    /// Write mail as `.eml` files into `dir` (created if missing).
    pub fn outbox(from: &str, dir: PathBuf) -> Result<Mailer, MailError> {
        std::fs::create_dir_all(&dir).map_err(|e| MailError::Send(e.to_string()))?;
        Ok(Mailer {
            from: from
                .parse()
                .map_err(|_| MailError::Address(from.to_owned()))?,
            transport: Transport::Outbox(AsyncFileTransport::new(&dir)),
            outbox: Some(dir),
            last_failure: std::sync::Mutex::new(None),
        })
    }

    /// Send through an SMTP relay with STARTTLS/TLS required.
    /// `password` is the relay's password for `smtp.username`, read from the environment.
    pub fn smtp(
        from: &str,
        smtp: &SmtpSettings,
        password: Option<&str>,
    ) -> Result<Mailer, MailError> {
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&smtp.host)
            .map_err(|e| MailError::Send(e.to_string()))?
            .port(smtp.port);
        if let Some(user) = &smtp.username {
            let password = password.unwrap_or_default().to_owned();
            builder = builder.credentials(Credentials::new(user.clone(), password));
        }
        Ok(Mailer {
            from: from
                .parse()
                .map_err(|_| MailError::Address(from.to_owned()))?,
            transport: Transport::Smtp(builder.build()),
            outbox: None,
            last_failure: std::sync::Mutex::new(None),
        })
    }

    pub async fn send(&self, to: &str, subject: &str, body: String) -> Result<(), MailError> {
        let to: Mailbox = to.parse().map_err(|_| MailError::Address(to.to_owned()))?;
        // Plain 7-bit text keeps links on one line (quoted-printable would fold them at 76
        // characters), so a link can be copied, or grepped from the outbox, whole. RFC 5322
        // allows 998 characters a line; lettre's own chooser stops at 76, hence pre-encoded.
        let body = body.replace("\r\n", "\n").replace('\n', "\r\n");
        let seven_bit = body.is_ascii() && body.split("\r\n").all(|line| line.len() <= 998);
        let body = if seven_bit {
            Body::dangerous_pre_encoded(body.into_bytes(), ContentTransferEncoding::SevenBit)
        } else {
            Body::new(body)
        };
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(subject)
            .header(ContentType::TEXT_PLAIN)
            .body(body)
            .map_err(|_| MailError::Build)?;
        let sent = match &self.transport {
            Transport::Outbox(t) => t
                .send(message)
                .await
                .map(drop)
                .map_err(|e| MailError::Send(e.to_string())),
            Transport::Smtp(t) => t
                .send(message)
                .await
                .map(drop)
                .map_err(|e| MailError::Send(e.to_string())),
        };
        if let Ok(mut last) = self.last_failure.lock() {
            *last = sent.as_ref().err().map(ToString::to_string);
        }
        sent
    }

    /// Why the last delivery failed, if it did (the relay down, the outbox unwritable); cleared
    /// by the next delivery that succeeds.
    pub fn failing(&self) -> Option<String> {
        self.last_failure.lock().ok().and_then(|l| l.clone())
    }
}
