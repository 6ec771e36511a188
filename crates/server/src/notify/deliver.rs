//! What each channel kind sends and how: the message formats (webhook
//! JSON with its HMAC signature, ntfy text with headers, Slack and Discord
//! JSON, email text, healthchecks pings) and one attempt at sending, which
//! reports what the receiver answered.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use hmac::{Hmac, KeyInit, Mac};
use rm_protocol::api::AlertView;

use super::channels::{ChannelConfig, ChatConfig, EmailConfig, SmtpTls};
use super::{
    NoticeHost, Payload, EVENT_BACKUP_FAILED, EVENT_BACKUP_SUCCEEDED, EVENT_FIRING, EVENT_RESOLVED,
    EVENT_TEST,
};
use crate::state::AppState;

/// How long one request (or one SMTP conversation) may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How much of a receiver's answer is kept, in characters.
pub const RESPONSE_EXCERPT_CHARS: usize = 200;
/// How much of a body is read to make the excerpt, in bytes.
const RESPONSE_READ_BYTES: usize = 4096;
/// Discord refuses longer `content`.
const DISCORD_MAX_CHARS: usize = 2000;
/// The signature header of webhook deliveries.
pub const SIGNATURE_HEADER: &str = "X-RM-Signature";
/// The slug healthchecks test pings go to.
pub const HEALTHCHECKS_TEST_SLUG: &str = "restic-manager-test";

/// What one attempt got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    /// The receiver accepted it (2xx).
    pub ok: bool,
    /// The HTTP status or SMTP reply code, when there was an answer.
    pub status: Option<u16>,
    /// The start of the answer, or the error.
    pub response: String,
}

impl Sent {
    /// An attempt that got no answer.
    pub fn failed(error: impl Into<String>) -> Sent {
        Sent {
            ok: false,
            status: None,
            response: excerpt(&error.into()),
        }
    }

    /// The error stored for a failed attempt: status and answer, or the
    /// error.
    pub fn error(&self) -> String {
        match self.status {
            Some(status) if self.response.is_empty() => format!("{status}"),
            Some(status) => format!("{status}: {}", self.response),
            None => self.response.clone(),
        }
    }
}

fn excerpt(text: &str) -> String {
    text.trim().chars().take(RESPONSE_EXCERPT_CHARS).collect()
}

/// The client deliveries use: rustls with ring and the system's roots
/// (the bundled Mozilla roots when none load), a per-request timeout, no
/// redirects (a receiver that redirects is misconfigured, and following
/// one would send the signed body somewhere nobody configured).
pub(crate) fn http_client() -> Result<reqwest::Client, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup failed: {e}"))?
        .with_root_certificates(roots())
        .with_no_client_auth();
    reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(REQUEST_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(user_agent())
        .tls_backend_preconfigured(config)
        .build()
        .map_err(|e| format!("could not build the HTTP client: {e}"))
}

fn roots() -> rustls::RootCertStore {
    let loaded = rustls_native_certs::load_native_certs();
    let mut roots = rustls::RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(loaded.certs);
    if added == 0 {
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    roots
}

/// `restic-manager/<version>`.
pub fn user_agent() -> String {
    format!("restic-manager/{}", env!("CARGO_PKG_VERSION"))
}

/// `sha256=<hex HMAC-SHA256(secret, body)>`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    // HMAC takes keys of any length, so this never fails.
    match Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(mut mac) => {
            mac.update(body);
            format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
        }
        Err(_) => String::new(),
    }
}

/// A host name as a healthchecks slug: lower case, every character but
/// `a-z 0-9 - _` made `-`.
pub fn slug(name: &str) -> String {
    name.to_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// The payload of a test message.
pub(crate) fn test_payload(channel_name: &str) -> Payload {
    let now = Utc::now();
    Payload {
        event: EVENT_TEST.to_owned(),
        alert: Some(AlertView {
            id: String::new(),
            kind: "test".to_owned(),
            host_id: String::new(),
            host_name: "restic-manager".to_owned(),
            state: "firing".to_owned(),
            subject: String::new(),
            message: format!(
                "This is a test notification from restic-manager (channel `{channel_name}`)."
            ),
            job_id: None,
            started_at: now,
            resolved_at: None,
            resolved_message: None,
            acknowledged_by: None,
            acknowledged_at: None,
            notified_at: None,
            notifications: 0,
        }),
        host: NoticeHost {
            id: String::new(),
            name: "restic-manager".to_owned(),
            labels: Default::default(),
        },
        repeat: Some(false),
        job_id: None,
    }
}

/// One line saying what happened: `FIRING backup_stale on web-01`.
pub fn headline(p: &Payload) -> String {
    let kind = p.alert.as_ref().map(|a| a.kind.as_str()).unwrap_or("");
    let host = &p.host.name;
    match p.event.as_str() {
        EVENT_TEST => "TEST notification from restic-manager".to_owned(),
        EVENT_FIRING if p.repeat == Some(true) => {
            format!("FIRING {kind} on {host} (still firing)")
        }
        EVENT_FIRING => format!("FIRING {kind} on {host}"),
        EVENT_RESOLVED => format!("RESOLVED {kind} on {host}"),
        EVENT_BACKUP_SUCCEEDED => format!("backup succeeded on {host}"),
        EVENT_BACKUP_FAILED => format!("backup failed on {host}"),
        other => format!("{other} on {host}"),
    }
}

/// The message, the host, the times and (when the server knows its public
/// URL) a link to the host's page, as plain text.
pub fn details(p: &Payload, public_url: &str) -> String {
    let mut lines = Vec::new();
    if let Some(a) = &p.alert {
        lines.push(a.message.clone());
        lines.push(String::new());
    }
    if p.host.id.is_empty() {
        lines.push(format!("Host: {}", p.host.name));
    } else {
        lines.push(format!("Host: {} ({})", p.host.name, p.host.id));
    }
    if let Some(a) = &p.alert {
        lines.push(format!("Alert: {}", a.kind));
        lines.push(format!("Since: {}", a.started_at.to_rfc3339()));
        if let Some(at) = a.resolved_at {
            lines.push(format!("Resolved: {}", at.to_rfc3339()));
        }
        if let Some(why) = &a.resolved_message {
            lines.push(format!("Resolved by: {why}"));
        }
    }
    if !public_url.is_empty() && !p.host.id.is_empty() {
        lines.push(String::new());
        lines.push(format!("{public_url}/hosts/{}", p.host.id));
    }
    lines.join("\n")
}

/// Text safe for an HTTP header: visible ASCII and spaces only.
fn header_text(text: &str) -> String {
    text.chars()
        .map(|c| if (' '..='~').contains(&c) { c } else { '?' })
        .collect()
}

/// Text for Slack's `text`: `&`, `<` and `>` escaped as Slack asks.
fn slack_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Sends `payload` through the channel configured as `config`: one
/// attempt, its outcome never an error.
pub(crate) async fn send(state: &AppState, config: &ChannelConfig, payload: &Payload) -> Sent {
    let public_url = state.config().public_url.as_str();
    if let ChannelConfig::Email(email) = config {
        return send_email(email, payload, public_url).await;
    }
    let client = match state.notifier().http() {
        Ok(client) => client,
        Err(e) => return Sent::failed(e),
    };
    let request = match http_request(client, config, payload, public_url) {
        Ok(request) => request,
        Err(e) => return Sent::failed(e),
    };
    match request.send().await {
        Ok(response) => answer(response).await,
        // Without the URL: for slack, discord and healthchecks it is the
        // secret, and the error text goes to logs, views and test answers.
        Err(e) => Sent::failed(describe(&e.without_url())),
    }
}

fn describe(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

async fn answer(mut response: reqwest::Response) -> Sent {
    let status = response.status();
    let mut body = Vec::new();
    while body.len() < RESPONSE_READ_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            _ => break,
        }
    }
    Sent {
        ok: status.is_success(),
        status: Some(status.as_u16()),
        response: excerpt(&String::from_utf8_lossy(&body)),
    }
}

/// The HTTP request of a delivery.
fn http_request(
    client: &reqwest::Client,
    config: &ChannelConfig,
    p: &Payload,
    public_url: &str,
) -> Result<reqwest::RequestBuilder, String> {
    let json = reqwest::header::CONTENT_TYPE;
    match config {
        ChannelConfig::Webhook(c) => {
            let body = serde_json::to_vec(p).map_err(|e| e.to_string())?;
            let mut request = client
                .post(&c.url)
                .header(json, "application/json")
                .body(body.clone());
            if let Some(secret) = &c.secret {
                request = request.header(SIGNATURE_HEADER, signature(secret, &body));
            }
            Ok(request)
        }
        ChannelConfig::Ntfy(c) => {
            let (priority, tags) = match p.event.as_str() {
                EVENT_FIRING => ("high", "rotating_light"),
                EVENT_RESOLVED => ("default", "white_check_mark"),
                _ => ("default", "test_tube"),
            };
            let kind = p.alert.as_ref().map(|a| a.kind.as_str()).unwrap_or("");
            let tags = if kind.is_empty() || kind == "test" {
                tags.to_owned()
            } else {
                format!("{tags},{kind}")
            };
            let mut request = client
                .post(&c.url)
                .header("Title", header_text(&headline(p)))
                .header("Priority", priority)
                .header("Tags", header_text(&tags))
                .header(reqwest::header::CONTENT_TYPE, "text/plain; charset=utf-8")
                .body(details(p, public_url));
            if let Some(token) = &c.token {
                request = request.bearer_auth(token);
            }
            Ok(request)
        }
        ChannelConfig::Slack(ChatConfig { webhook_url }) => {
            // Slack reads `<…>` as links and mentions (`<!channel>`); a
            // host name or message must not ping anyone.
            let text = slack_escape(&format!("*{}*\n{}", headline(p), details(p, public_url)));
            Ok(client
                .post(webhook_url)
                .json(&serde_json::json!({ "text": text })))
        }
        ChannelConfig::Discord(ChatConfig { webhook_url }) => {
            let content: String = format!("**{}**\n{}", headline(p), details(p, public_url))
                .chars()
                .take(DISCORD_MAX_CHARS)
                .collect();
            // No mentions: an `@everyone` in a host name stays text.
            Ok(client.post(webhook_url).json(&serde_json::json!({
                "content": content,
                "allowed_mentions": {"parse": []},
            })))
        }
        ChannelConfig::Healthchecks(c) => {
            let url = match p.event.as_str() {
                EVENT_BACKUP_SUCCEEDED => format!("{}/{}", c.base_url, slug(&p.host.name)),
                EVENT_BACKUP_FAILED => format!("{}/{}/fail", c.base_url, slug(&p.host.name)),
                EVENT_TEST => format!("{}/{HEALTHCHECKS_TEST_SLUG}", c.base_url),
                other => return Err(format!("healthchecks channels take no `{other}` events")),
            };
            Ok(client.get(url))
        }
        ChannelConfig::Email(_) => Err("email is not sent over HTTP".to_owned()),
    }
}

/// The subject of an email: `[restic-manager] FIRING backup_stale on web-01`.
pub fn email_subject(p: &Payload) -> String {
    format!("[restic-manager] {}", headline(p))
}

async fn send_email(c: &EmailConfig, p: &Payload, public_url: &str) -> Sent {
    use lettre::message::header::ContentType;
    use lettre::transport::smtp::authentication::Credentials;
    use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

    let mut message = Message::builder()
        .subject(email_subject(p))
        .header(ContentType::TEXT_PLAIN);
    match c.from.parse() {
        Ok(from) => message = message.from(from),
        Err(e) => return Sent::failed(format!("config.from: {e}")),
    }
    for (i, to) in c.to.iter().enumerate() {
        match to.parse() {
            Ok(to) => message = message.to(to),
            Err(e) => return Sent::failed(format!("config.to[{i}]: {e}")),
        }
    }
    let message = match message.body(details(p, public_url)) {
        Ok(message) => message,
        Err(e) => return Sent::failed(format!("could not build the message: {e}")),
    };
    let tls = c.tls.unwrap_or(SmtpTls::Starttls);
    let builder = match tls {
        SmtpTls::None => Ok(AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(
            &c.smtp_host,
        )),
        SmtpTls::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&c.smtp_host),
        SmtpTls::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&c.smtp_host),
    };
    let mut builder = match builder {
        Ok(builder) => builder,
        Err(e) => return Sent::failed(format!("SMTP setup failed: {e}")),
    };
    builder = builder
        .port(c.smtp_port.unwrap_or(587))
        .timeout(Some(REQUEST_TIMEOUT));
    if let Some(username) = &c.username {
        builder = builder.credentials(Credentials::new(
            username.clone(),
            c.password.clone().unwrap_or_default(),
        ));
    }
    let transport = builder.build();
    let sent = tokio::time::timeout(REQUEST_TIMEOUT * 2, transport.send(message)).await;
    match sent {
        Err(_) => Sent::failed(format!(
            "the SMTP server did not finish within {} s",
            (REQUEST_TIMEOUT * 2).as_secs()
        )),
        Ok(Ok(response)) => Sent {
            ok: response.is_positive(),
            status: response.code().to_string().parse().ok(),
            response: excerpt(&response.message().collect::<Vec<_>>().join(" ")),
        },
        Ok(Err(e)) => Sent {
            ok: false,
            status: e.status().and_then(|code| code.to_string().parse().ok()),
            response: excerpt(&e.to_string()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert_payload(event: &str, repeat: bool) -> Payload {
        let started = chrono::DateTime::parse_from_rfc3339("2026-12-06T10:00:00Z")
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default();
        Payload {
            event: event.to_owned(),
            alert: Some(AlertView {
                id: "01JALERT0000000000000000AA".to_owned(),
                kind: "backup_stale".to_owned(),
                host_id: "01JHOST00000000000000000AA".to_owned(),
                host_name: "web-01".to_owned(),
                state: "firing".to_owned(),
                subject: String::new(),
                message: "no backup for 27 h".to_owned(),
                job_id: None,
                started_at: started,
                resolved_at: None,
                resolved_message: None,
                acknowledged_by: None,
                acknowledged_at: None,
                notified_at: None,
                notifications: 1,
            }),
            host: NoticeHost {
                id: "01JHOST00000000000000000AA".to_owned(),
                name: "web-01".to_owned(),
                labels: [("env".to_owned(), "prod".to_owned())].into(),
            },
            repeat: Some(repeat),
            job_id: None,
        }
    }

    #[test]
    fn slugs_are_url_safe() {
        assert_eq!(slug("web-01"), "web-01");
        assert_eq!(slug("Web_01.example.com"), "web_01-example-com");
        assert_eq!(slug("a b/c\"d"), "a-b-c-d");
        assert_eq!(slug("ÄÖ"), "--");
    }

    #[test]
    fn the_signature_is_hmac_sha256_of_the_body() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn headlines_and_subjects_say_what_happened() {
        let firing = alert_payload(EVENT_FIRING, false);
        assert_eq!(headline(&firing), "FIRING backup_stale on web-01");
        assert_eq!(
            email_subject(&firing),
            "[restic-manager] FIRING backup_stale on web-01"
        );
        assert_eq!(
            headline(&alert_payload(EVENT_FIRING, true)),
            "FIRING backup_stale on web-01 (still firing)"
        );
        assert_eq!(
            headline(&alert_payload(EVENT_RESOLVED, false)),
            "RESOLVED backup_stale on web-01"
        );
    }

    #[test]
    fn details_link_the_host_only_when_the_public_url_is_known() {
        let p = alert_payload(EVENT_FIRING, false);
        let with = details(&p, "https://rm.example.com");
        assert!(with.starts_with("no backup for 27 h\n"), "{with}");
        assert!(with.contains("Host: web-01 (01JHOST00000000000000000AA)"));
        assert!(with.contains("Since: 2026-12-06T10:00:00+00:00"));
        assert!(with.ends_with("https://rm.example.com/hosts/01JHOST00000000000000000AA"));
        assert!(!details(&p, "").contains("http"));
    }

    #[test]
    fn the_webhook_body_is_event_alert_host_repeat() {
        let body = serde_json::to_value(alert_payload(EVENT_FIRING, false)).unwrap_or_default();
        let keys: Vec<&String> = body
            .as_object()
            .map(|o| o.keys().collect())
            .unwrap_or_default();
        assert_eq!(keys, ["alert", "event", "host", "repeat"]);
        assert_eq!(body["host"]["labels"]["env"], "prod");
    }

    #[test]
    fn slack_text_cannot_mention() {
        assert_eq!(slack_escape("<!channel> a&b"), "&lt;!channel&gt; a&amp;b");
    }

    #[test]
    fn header_text_is_visible_ascii() {
        assert_eq!(header_text("FIRING on wëb\n01"), "FIRING on w?b?01");
    }
}
