use std::time::{Duration, Instant};

use cerver_mail::{
    MailConfig, MailError, Mailer, Secret, TlsMode, login_message, parse_email, signup_message,
};
use tokio::net::TcpListener;

use crate::{parse, sink};

/// Whatever happens, a test here must not hang.
const TEST_BOUND: Duration = Duration::from_secs(30);

fn smtp_config(port: u16, tls: TlsMode) -> MailConfig {
    MailConfig {
        host: Some("127.0.0.1".into()),
        port: Some(port),
        tls,
        from: Some("Cerver <noreply@example.com>".into()),
        timeout_secs: Some(2),
        ..MailConfig::default()
    }
}

#[tokio::test]
async fn smtp_delivers_to_a_real_server() {
    let mut sink = sink::start().await;
    let data_dir = tempfile::tempdir().unwrap();
    let mailer = Mailer::new(&smtp_config(sink.port, TlsMode::None), data_dir.path()).unwrap();
    assert_eq!(mailer.spool_dir(), None);

    let to = parse_email("ada@example.com").unwrap();
    let url = "https://cerver.example/login?token=OTk5OTk5OTk5OTk5OTk5OTk5OTk5OTk5OTk5OTk5OTk5OTk5&redirect=%2F";
    tokio::time::timeout(TEST_BOUND, mailer.send(&login_message(&to, url)))
        .await
        .expect("send must not hang")
        .unwrap();

    let received = tokio::time::timeout(TEST_BOUND, sink.received.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(received.mail_from, "<noreply@example.com>");
    assert_eq!(received.rcpt_to, ["<ada@example.com>"]);
    let parsed = parse(&received.data);
    assert_eq!(
        parsed.to().unwrap().first().unwrap().address(),
        Some("ada@example.com")
    );
    assert_eq!(
        parsed.from().unwrap().first().unwrap().address(),
        Some("noreply@example.com")
    );
    assert_eq!(parsed.subject(), Some("Your Cerver login link"));
    assert!(parsed.body_text(0).unwrap().contains(url));
    assert!(
        parsed
            .body_html(0)
            .unwrap()
            .contains(&url.replace('&', "&amp;"))
    );
    // Nothing was spooled.
    assert!(!data_dir.path().join("mail").exists());

    // The transport opens a fresh connection for the next message.
    mailer
        .send(&signup_message(&to, "https://cerver.example/v?t=2"))
        .await
        .unwrap();
    let second = sink.received.recv().await.unwrap();
    assert!(
        parse(&second.data)
            .body_text(0)
            .unwrap()
            .contains("https://cerver.example/v?t=2")
    );
}

#[tokio::test]
async fn unreachable_smtp_port_is_a_clear_error() {
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap().port()
    }; // closed here: nothing listens on `port` any more
    let data_dir = tempfile::tempdir().unwrap();
    let mailer = Mailer::new(&smtp_config(port, TlsMode::None), data_dir.path()).unwrap();
    let to = parse_email("ada@example.com").unwrap();

    let started = Instant::now();
    let err = tokio::time::timeout(
        TEST_BOUND,
        mailer.send(&login_message(&to, "https://x.example/l")),
    )
    .await
    .expect("send must not hang")
    .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert!(matches!(err, MailError::Smtp { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains(&format!("127.0.0.1:{port}")), "{message}");
    assert!(message.to_lowercase().contains("connect"), "{message}");
}

#[tokio::test]
async fn silent_smtp_server_times_out() {
    // Accepts connections and never says a word.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let data_dir = tempfile::tempdir().unwrap();
    let config = MailConfig {
        timeout_secs: Some(1),
        ..smtp_config(port, TlsMode::None)
    };
    let mailer = Mailer::new(&config, data_dir.path()).unwrap();
    let to = parse_email("ada@example.com").unwrap();

    let started = Instant::now();
    let err = tokio::time::timeout(
        TEST_BOUND,
        mailer.send(&login_message(&to, "https://x.example/l")),
    )
    .await
    .expect("send must not hang")
    .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(matches!(err, MailError::Timeout { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!("SMTP delivery via 127.0.0.1:{port} timed out after 1s")
    );
    holder.abort();
}

#[tokio::test]
async fn starttls_is_required_not_opportunistic() {
    // The sink offers no STARTTLS: the mailer must refuse to send in the clear.
    let mut sink = sink::start().await;
    let data_dir = tempfile::tempdir().unwrap();
    let mailer = Mailer::new(&smtp_config(sink.port, TlsMode::Starttls), data_dir.path()).unwrap();
    let to = parse_email("ada@example.com").unwrap();
    let err = tokio::time::timeout(
        TEST_BOUND,
        mailer.send(&login_message(&to, "https://x.example/l")),
    )
    .await
    .expect("send must not hang")
    .unwrap_err();
    assert!(matches!(err, MailError::Smtp { .. }), "{err:?}");
    assert!(
        sink.received.try_recv().is_err(),
        "nothing may have been delivered"
    );
}

#[test]
fn config_from_toml() {
    let config: MailConfig = toml::from_str(
        r#"
        host = "smtp.example.com"
        port = 2525
        username = "cerver"
        password = "correct horse battery staple"
        tls = "tls"
        from = "Cerver <noreply@example.com>"
        "#,
    )
    .unwrap();
    assert_eq!(config.smtp_host(), Some("smtp.example.com"));
    assert_eq!(config.port(), 2525);
    assert_eq!(config.tls, TlsMode::Tls);
    assert_eq!(
        config.password,
        Some(Secret::new("correct horse battery staple"))
    );

    let data_dir = tempfile::tempdir().unwrap();
    let mailer = Mailer::new(&config, data_dir.path()).unwrap();
    for printed in [
        format!("{config:?}"),
        format!("{config:#?}"),
        format!("{mailer:?}"),
    ] {
        assert!(!printed.contains("horse"), "password printed: {printed}");
    }
    assert!(format!("{mailer:?}").contains("smtp.example.com:2525"));

    // The embedded default: an empty section is spool mode.
    let empty: MailConfig = toml::from_str("").unwrap();
    assert_eq!(empty, MailConfig::default());
    assert_eq!(empty.tls, TlsMode::Starttls);

    assert!(toml::from_str::<MailConfig>("tls = \"ssl\"").is_err());
    assert!(toml::from_str::<MailConfig>("hots = \"typo.example.com\"").is_err());
}

#[test]
fn smtp_config_mistakes_are_reported_up_front() {
    let data_dir = tempfile::tempdir().unwrap();
    let no_from = MailConfig {
        from: None,
        ..smtp_config(25, TlsMode::None)
    };
    let err = Mailer::new(&no_from, data_dir.path()).unwrap_err();
    assert!(matches!(err, MailError::Config(_)), "{err}");

    let cleartext_password = MailConfig {
        host: Some("smtp.example.com".into()),
        username: Some("cerver".into()),
        password: Some(Secret::new("pw")),
        ..smtp_config(25, TlsMode::None)
    };
    let err = Mailer::new(&cleartext_password, data_dir.path()).unwrap_err();
    assert!(err.to_string().contains("unencrypted"), "{err}");
    assert!(!err.to_string().contains("pw"), "{err}");
}
