use std::collections::HashSet;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};

use cerver_mail::{
    MailConfig, MailError, Mailer, Message, login_message, parse_email, signup_message,
};
use mail_parser::MimeHeaders;

use crate::parse;

fn spool_mailer(data_dir: &Path) -> Mailer {
    Mailer::new(&MailConfig::default(), data_dir).unwrap()
}

fn eml_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}

#[tokio::test]
async fn spool_writes_one_parseable_eml() {
    let data_dir = tempfile::tempdir().unwrap();
    let mailer = spool_mailer(data_dir.path());
    let spool = data_dir.path().join("mail");
    assert_eq!(mailer.spool_dir(), Some(spool.as_path()));

    let to = parse_email("ada@example.com").unwrap();
    let url = "https://cerver.example/signup/verify?token=Zm9vYmFyYmF6cXV4cXV1eGNvcmdlZ3JhdWx0Z2FycGx5&next=%2Fdashboard";
    mailer.send(&signup_message(&to, url)).await.unwrap();

    let files = eml_files(&spool);
    assert_eq!(files.len(), 1, "{files:?}");
    let name = files[0].file_name().unwrap().to_str().unwrap();
    let (ms, rest) = name.split_once('-').unwrap();
    assert!(ms.parse::<u64>().unwrap() > 1_600_000_000_000, "{name}");
    assert!(
        rest.ends_with(".eml") && rest.len() > ".eml".len(),
        "{name}"
    );

    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&files[0]).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "spooled mail holds links: owner only");

    let raw = std::fs::read(&files[0]).unwrap();
    let parsed = parse(&raw);
    assert_eq!(
        parsed.to().unwrap().first().unwrap().address(),
        Some("ada@example.com")
    );
    assert_eq!(
        parsed.subject(),
        Some("Confirm your email address for Cerver")
    );
    assert!(parsed.date().is_some());
    assert!(parsed.message_id().is_some());
    let text = parsed.body_text(0).unwrap();
    assert!(text.contains("finish signing up"), "{text}");
    assert!(text.contains(url), "{text}");
    let html = parsed.body_html(0).unwrap();
    assert!(html.contains(&url.replace('&', "&amp;")), "{html}");
    assert_eq!(
        parsed.content_type().unwrap().subtype(),
        Some("alternative")
    );
}

#[tokio::test]
async fn spool_writes_plain_text_only_messages() {
    let data_dir = tempfile::tempdir().unwrap();
    let mailer = spool_mailer(data_dir.path());
    let msg = Message {
        to: parse_email("bob@example.org").unwrap(),
        subject: "Plain".into(),
        text_body: "Just text, ünïcödé too.\n".into(),
        html_body: None,
    };
    mailer.send(&msg).await.unwrap();
    let files = eml_files(mailer.spool_dir().unwrap());
    let raw = std::fs::read(&files[0]).unwrap();
    let parsed = parse(&raw);
    assert_eq!(parsed.subject(), Some("Plain"));
    assert_eq!(
        parsed.body_text(0).unwrap().trim_end(),
        "Just text, ünïcödé too."
    );
    let content_type = parsed.content_type().unwrap();
    assert_eq!(
        (content_type.ctype(), content_type.subtype()),
        ("text", Some("plain"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_sends_produce_distinct_files() {
    let data_dir = tempfile::tempdir().unwrap();
    let mailer = Arc::new(spool_mailer(data_dir.path()));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..40 {
        let mailer = mailer.clone();
        tasks.spawn(async move {
            let to = parse_email(&format!("user{i}@example.com")).unwrap();
            let url = format!("https://cerver.example/login?t={i}");
            mailer.send(&login_message(&to, &url)).await
        });
    }
    while let Some(result) = tasks.join_next().await {
        result.unwrap().unwrap();
    }

    let files = eml_files(mailer.spool_dir().unwrap());
    let names: HashSet<_> = files
        .iter()
        .map(|f| f.file_name().unwrap().to_owned())
        .collect();
    assert_eq!(files.len(), 40, "{files:?}");
    assert_eq!(names.len(), 40);
    assert!(
        names.iter().all(|n| n.to_str().unwrap().ends_with(".eml") && !n.to_str().unwrap().starts_with('.')),
        "no temporary file may be left: {names:?}"
    );
    // Every recipient got exactly their own link.
    let mut seen = HashSet::new();
    for file in &files {
        let raw = std::fs::read(file).unwrap();
        let parsed = parse(&raw);
        let to = parsed
            .to()
            .unwrap()
            .first()
            .unwrap()
            .address()
            .unwrap()
            .to_string();
        let i: usize = to
            .trim_start_matches("user")
            .trim_end_matches("@example.com")
            .parse()
            .unwrap();
        let text = parsed.body_text(0).unwrap().replace("\r\n", "\n");
        assert!(text.contains(&format!("login?t={i}\n")), "{text}");
        assert!(seen.insert(i));
    }
}

#[tokio::test]
async fn spool_recreates_a_removed_directory() {
    let data_dir = tempfile::tempdir().unwrap();
    let mailer = spool_mailer(data_dir.path());
    std::fs::remove_dir(mailer.spool_dir().unwrap()).unwrap();
    let to = parse_email("ada@example.com").unwrap();
    mailer
        .send(&login_message(&to, "https://x.example/l"))
        .await
        .unwrap();
    assert_eq!(eml_files(mailer.spool_dir().unwrap()).len(), 1);
}

#[tokio::test]
async fn spool_is_bounded() {
    let data_dir = tempfile::tempdir().unwrap();
    let mailer = spool_mailer(data_dir.path());
    let dir = mailer.spool_dir().unwrap();
    for i in 0..cerver_mail::MAX_SPOOLED_FILES {
        std::fs::File::create(dir.join(format!("{i}-x.eml"))).unwrap();
    }
    let to = parse_email("ada@example.com").unwrap();
    let err = mailer
        .send(&login_message(&to, "https://x.example/l"))
        .await
        .unwrap_err();
    assert!(matches!(err, MailError::SpoolFull { .. }), "{err}");
}

#[tokio::test]
async fn spool_error_is_clear() {
    let data_dir = tempfile::tempdir().unwrap();
    // The data directory path is a file: the spool cannot be created.
    let not_a_dir = data_dir.path().join("file");
    std::fs::write(&not_a_dir, b"").unwrap();
    let err = Mailer::new(&MailConfig::default(), &not_a_dir).unwrap_err();
    assert!(matches!(err, MailError::Spool { .. }), "{err}");
    assert!(err.to_string().contains("mail spool"), "{err}");
}

/// A tracing writer into a shared buffer.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn spool_logs_recipient_and_link_but_not_the_body() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let data_dir = tempfile::tempdir().unwrap();
    let mailer = spool_mailer(data_dir.path());
    let to = parse_email("ada@example.com").unwrap();
    let url = "https://cerver.example/signup/verify?token=abc123";
    mailer.send(&signup_message(&to, url)).await.unwrap();

    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(log.contains("ada@example.com"), "{log}");
    // The link is logged with its token redacted (a logged token would be a usable key).
    assert!(
        log.contains("https://cerver.example/signup/verify?token=<redacted>"),
        "{log}"
    );
    assert!(
        !log.contains("abc123"),
        "the token must not be logged: {log}"
    );
    assert!(log.contains(" INFO "), "{log}");
    assert!(
        !log.contains("Welcome"),
        "the body must not be logged: {log}"
    );
    assert!(
        !log.contains("ignore this email"),
        "the body must not be logged: {log}"
    );
    assert_eq!(log.lines().count(), 1, "{log}");
}
