//! Connecting to the queue's database from a URL or a `key=value` string.
//!
//! Owns parsing the connection string (tokio-postgres's parser: `postgres://…` or
//! `host=… user=…`), the description of the server that error messages name (host, port,
//! database and user, never the password), and the connection's background task. Does not
//! decide where the URL comes from (the command line does).

use std::fmt;

/// Where the database is, as messages name it: everything but the password.
#[derive(Debug, Clone)]
pub struct Target(String);

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Target {
    /// The server a connection string names, as messages show it (never its password); the
    /// string itself when it cannot be parsed.
    pub fn of_url(url: &str) -> Target {
        match url.parse::<tokio_postgres::Config>() {
            Ok(config) => Target::of(&config),
            Err(_) => Target("(an unparsable URL)".into()),
        }
    }

    fn of(config: &tokio_postgres::Config) -> Target {
        let hosts: Vec<String> = config
            .get_hosts()
            .iter()
            .map(|host| match host {
                tokio_postgres::config::Host::Tcp(name) => name.clone(),
                tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
            })
            .collect();
        let port = config
            .get_ports()
            .first()
            .map_or(String::new(), |p| format!(":{p}"));
        Target(format!(
            "{}{port}/{} as {}",
            if hosts.is_empty() {
                "localhost".to_string()
            } else {
                hosts.join(",")
            },
            config.get_dbname().unwrap_or("(the user's database)"),
            config.get_user().unwrap_or("(the current user)"),
        ))
    }
}

/// Why the database could not be used.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The URL does not parse.
    #[error(
        "the queue URL is not valid ({reason}); write it as postgres://USER:PASSWORD@HOST:PORT/DATABASE or as `host=… user=… dbname=…`"
    )]
    BadUrl {
        /// What the parser said, without the URL (which may hold the password).
        reason: String,
    },
    /// The certificate authorities file could not be used.
    #[error(
        "cannot use the queue database's certificate authorities from {} (ORCHESTRATE_QUEUE_CA): {reason}",
        path.display()
    )]
    Ca {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        reason: String,
    },
    /// TLS could not be set up in this build (the crypto provider refused the protocol versions).
    #[error("cannot set up TLS to the queue database: {reason}")]
    Tls {
        /// Why.
        reason: String,
    },
    /// The password file could not be read.
    #[error(
        "cannot read the queue database's password from {} (ORCHESTRATE_QUEUE_PASSWORD_FILE): {reason}",
        path.display()
    )]
    PasswordFile {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        reason: String,
    },
    /// The server could not be reached or refused the login.
    #[error(
        "cannot connect to the queue database at {target}: {}",
        describe(source)
    )]
    Connect {
        /// The server, without the password.
        target: Target,
        /// The driver's error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// A statement failed.
    #[error(
        "the queue database at {target} failed to {action}: {}",
        describe(source)
    )]
    Query {
        /// The server.
        target: Target,
        /// What was being done.
        action: &'static str,
        /// The driver's error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// The server could not be reached just now (a connection is being re-made, with backoff).
    #[error("the queue database at {target} is unreachable: {reason}")]
    Unreachable {
        /// The server.
        target: Target,
        /// Why, as last seen.
        reason: String,
    },
    /// The database has no queue schema yet.
    #[error(
        "the queue database at {target} has no orchestrate schema (version {found}, this orchestrate needs {needed}); run `orchestrate db migrate` once, from any machine"
    )]
    NotMigrated {
        /// The server.
        target: Target,
        /// The schema version found (0: none).
        found: i32,
        /// The version this binary needs.
        needed: i32,
    },
    /// The schema is newer than this binary knows.
    #[error(
        "the queue database at {target} has schema version {found}, newer than this orchestrate knows ({known}); upgrade orchestrate on this machine"
    )]
    TooNew {
        /// The server.
        target: Target,
        /// The version found.
        found: i32,
        /// The newest this binary has.
        known: i32,
    },
}

/// TLS to the server: rustls (ring), checking the server's certificate against the certificates
/// in the PEM file `ORCHESTRATE_QUEUE_CA` names, else against the system's roots.
impl DbError {
    /// Whether trying again may succeed: the server unreachable, the connection lost mid-call,
    /// the server shutting down or restarting, a serialization failure or deadlock, too many
    /// connections. Not: a bad URL or password, a schema problem, an error in a statement.
    pub fn is_transient(&self) -> bool {
        match self {
            DbError::Unreachable { .. } => true,
            DbError::Connect { source, .. } | DbError::Query { source, .. } => {
                match source.as_db_error() {
                    // No answer from the server: the connection broke.
                    None => true,
                    Some(db) => {
                        let code = db.code().code();
                        ["08", "57", "40", "53"]
                            .iter()
                            .any(|class| code.starts_with(class))
                            && code != "57014"
                    }
                }
            }
            _ => false,
        }
    }
}

fn tls_config() -> Result<rustls::ClientConfig, DbError> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let mut roots = rustls::RootCertStore::empty();
    match std::env::var_os("ORCHESTRATE_QUEUE_CA") {
        Some(path) => {
            let bad = |reason: String| DbError::Ca {
                path: std::path::PathBuf::from(&path),
                reason,
            };
            let certs = CertificateDer::pem_file_iter(&path).map_err(|e| bad(e.to_string()))?;
            for cert in certs {
                let cert = cert.map_err(|e| bad(e.to_string()))?;
                roots.add(cert).map_err(|e| bad(e.to_string()))?;
            }
            if roots.is_empty() {
                return Err(bad("it holds no certificate".into()));
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
        }
    }
    #[expect(
        deprecated,
        reason = "ring has no post-quantum key exchange; aws-lc-rs would need cmake and a C \
                  toolchain on every machine that builds orchestrate"
    )]
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| DbError::Tls {
            reason: e.to_string(),
        })?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// The password from `ORCHESTRATE_QUEUE_PASSWORD_FILE` (its first line), else from
/// `ORCHESTRATE_QUEUE_PASSWORD`.
fn password_from_env() -> Result<Option<String>, DbError> {
    if let Some(path) = std::env::var_os("ORCHESTRATE_QUEUE_PASSWORD_FILE") {
        let text = std::fs::read_to_string(&path).map_err(|e| DbError::PasswordFile {
            path: std::path::PathBuf::from(&path),
            reason: e.to_string(),
        })?;
        return Ok(Some(text.lines().next().unwrap_or_default().to_string()));
    }
    Ok(std::env::var("ORCHESTRATE_QUEUE_PASSWORD").ok())
}

/// What the driver's error says, with the server's own message (tokio-postgres shows only
/// "db error" for those) or the cause of a failed connection.
fn describe(err: &tokio_postgres::Error) -> String {
    use std::error::Error as _;
    if let Some(db) = err.as_db_error() {
        return match db.hint() {
            Some(hint) => format!("{} ({hint})", db.message()),
            None => db.message().to_string(),
        };
    }
    let mut text = err.to_string();
    if let Some(cause) = err.source() {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text = format!("{text}: {cause}");
        }
    }
    text
}

/// An open connection and where it goes.
pub struct Db {
    /// The connection.
    pub client: tokio_postgres::Client,
    /// Where it goes, for messages.
    pub target: Target,
    task: tokio::task::JoinHandle<()>,
    /// Statements prepared on this connection, by text: the queue's frequent statements are
    /// parsed once per connection, not at every call (a round trip each).
    prepared: std::sync::Mutex<std::collections::HashMap<String, tokio_postgres::Statement>>,
}

impl Drop for Db {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Db {
    /// Connects to `url` (`postgres://…` or `key=value` pairs), without TLS: for a Unix socket
    /// or a trusted network.
    /// A URL without a password takes it from `ORCHESTRATE_QUEUE_PASSWORD_FILE` (the file's
    /// first line) or `ORCHESTRATE_QUEUE_PASSWORD`, so that it need not be in a file that is
    /// shared or in a command line that `ps` shows.
    pub async fn connect(url: &str) -> Result<Db, DbError> {
        Db::connect_with(url, None).await
    }

    /// [`Db::connect`], with the payloads of the notifications this connection receives (after
    /// a `LISTEN`) sent to `notes`.
    pub async fn connect_with(
        url: &str,
        notes: Option<tokio::sync::mpsc::UnboundedSender<String>>,
    ) -> Result<Db, DbError> {
        let mut config: tokio_postgres::Config =
            url.parse()
                .map_err(|e: tokio_postgres::Error| DbError::BadUrl {
                    reason: e.to_string(),
                })?;
        if config.get_password().is_none()
            && let Some(password) = password_from_env()?
        {
            config.password(password);
        }
        let target = Target::of(&config);
        let connect_failed = |source| DbError::Connect {
            target: target.clone(),
            source,
        };
        let unix_only = !config.get_hosts().is_empty()
            && config
                .get_hosts()
                .iter()
                .all(|h| matches!(h, tokio_postgres::config::Host::Unix(_)));
        let task = if unix_only || config.get_ssl_mode() == tokio_postgres::config::SslMode::Disable
        {
            let (client, connection) = config
                .connect(tokio_postgres::NoTls)
                .await
                .map_err(connect_failed)?;
            (client, tokio::spawn(drive(connection, notes)))
        } else {
            // `prefer` (the default) and `require` over TCP: TLS whenever the server offers it,
            // its certificate checked against the system's roots or ORCHESTRATE_QUEUE_CA. (A
            // Unix socket has no TLS.)
            let tls = tokio_postgres_rustls::MakeRustlsConnect::new(tls_config()?);
            let (client, connection) = config.connect(tls).await.map_err(connect_failed)?;
            (client, tokio::spawn(drive(connection, notes)))
        };
        let (client, task) = task;
        Ok(Db {
            client,
            target,
            task,
            prepared: std::sync::Mutex::new(std::collections::HashMap::new()),
        })
    }

    /// `sql` prepared on this connection, once.
    pub(crate) async fn prepared(
        &self,
        sql: &str,
    ) -> Result<tokio_postgres::Statement, tokio_postgres::Error> {
        if let Some(statement) = self
            .prepared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(sql)
        {
            return Ok(statement.clone());
        }
        let statement = self.client.prepare(sql).await?;
        self.prepared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(sql.to_string(), statement.clone());
        Ok(statement)
    }

    /// A failed statement of `action` as an error naming the server.
    pub(crate) fn failed(
        &self,
        action: &'static str,
    ) -> impl Fn(tokio_postgres::Error) -> DbError + use<> {
        let target = self.target.clone();
        move |source| DbError::Query {
            target: target.clone(),
            action,
            source,
        }
    }
}

/// Runs a connection until it closes, sending each notification to `notes` as
/// `CHANNEL:PAYLOAD`.
async fn drive<S, T>(
    mut connection: tokio_postgres::Connection<S, T>,
    notes: Option<tokio::sync::mpsc::UnboundedSender<String>>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
            Some(Ok(tokio_postgres::AsyncMessage::Notification(note))) => {
                if let Some(tx) = &notes {
                    let _ = tx.send(format!("{}:{}", note.channel(), note.payload()));
                }
            }
            Some(Ok(_)) => {}
            Some(Err(_)) | None => return,
        }
    }
}
