//! The queue database: `orchestrate db migrate` against a private PostgreSQL that the suite
//! starts itself (initdb and pg_ctl into a temp dir, listening on a Unix socket only; as an
//! unprivileged user when the tests run as root, since PostgreSQL refuses to run as root).
//! Where no PostgreSQL binaries are found these tests print `SKIPPED: …` and how to install
//! them (`ORCHESTRATE_TEST_REQUIRE_ALL=1`, which `.ci/run` sets, makes that a failure).

#[allow(unused_imports)]
use crate::harness::*;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The superuser's password of the private server: every connection must give it.
const PASSWORD: &str = "s3cret-pg-pw";

/// A private PostgreSQL server, stopped (immediately) and removed when dropped.
pub struct PgServer {
    dir: tempfile::TempDir,
    bin: PathBuf,
    /// Run the server's programs as this user (root cannot run PostgreSQL).
    owner: Option<u32>,
    /// The server's options (`pg_ctl -o`), to start it again with.
    options: String,
}

impl PgServer {
    /// Starts a new server, or says why it cannot here.
    pub fn start() -> Result<PgServer, String> {
        PgServer::start_with("")
    }

    /// A server that also listens on 127.0.0.1:`port` with TLS on, its certificate (for
    /// `localhost`) signed by the CA whose certificate is returned (a PEM file's path).
    pub fn start_tls(port: u16) -> Result<(PgServer, PathBuf), String> {
        let certs = tempfile::Builder::new()
            .prefix("orchestrate-pg-certs-")
            .tempdir()
            .map_err(|e| e.to_string())?
            .keep();
        let openssl = |args: &[&str]| -> Result<(), String> {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(&certs)
                .output()
                .map_err(|e| format!("cannot run openssl (needed for the TLS test): {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "openssl {args:?}: {}",
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            Ok(())
        };
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "2",
            "-subj",
            "/CN=orchestrate test CA",
        ])?;
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ])?;
        std::fs::write(
            certs.join("ext"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
        )
        .map_err(|e| e.to_string())?;
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-extfile",
            "ext",
        ])?;
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            for f in ["", "server.key", "server.crt"] {
                std::os::unix::fs::chown(certs.join(f), Some(65534), Some(65534))
                    .map_err(|e| e.to_string())?;
            }
        }
        std::fs::set_permissions(
            certs.join("server.key"),
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .map_err(|e| e.to_string())?;
        let options = format!(
            " -c listen_addresses=127.0.0.1 -p {port} -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
            certs.join("server.crt").display(),
            certs.join("server.key").display()
        );
        let server = PgServer::start_with(&options)?;
        Ok((server, certs.join("ca.crt")))
    }

    fn start_with(extra_options: &str) -> Result<PgServer, String> {
        let bin = pg_bin_dir().ok_or(
            "no PostgreSQL server binaries (initdb, pg_ctl) found: install them \
             (Debian: apt-get install postgresql)",
        )?;
        let dir = tempfile::Builder::new()
            .prefix("orchestrate-pg-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        // SAFETY: geteuid has no preconditions.
        let owner = (unsafe { libc::geteuid() } == 0).then_some(65534);
        std::fs::create_dir(dir.path().join("sock")).map_err(|e| e.to_string())?;
        std::fs::write(dir.path().join("pw"), PASSWORD).map_err(|e| e.to_string())?;
        if let Some(uid) = owner {
            for path in [dir.path(), &dir.path().join("sock"), &dir.path().join("pw")] {
                std::os::unix::fs::chown(path, Some(uid), Some(uid)).map_err(|e| e.to_string())?;
            }
        }
        let mut server = PgServer {
            dir,
            bin,
            owner,
            options: String::new(),
        };
        let data = server.path("data");
        server.run(
            "initdb",
            &[
                "-D",
                &data,
                "-U",
                "orchestrate",
                "--pwfile",
                &server.path("pw"),
                "--auth-local=scram-sha-256",
                "--auth-host=scram-sha-256",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
        )?;
        server.options = if extra_options.is_empty() {
            format!("-k {} -c listen_addresses=''", server.path("sock"))
        } else {
            format!("-k {}{extra_options}", server.path("sock"))
        };
        server.start_again()?;
        Ok(server)
    }

    /// Starts the server (again, after [`PgServer::stop_immediately`]).
    pub fn start_again(&self) -> Result<(), String> {
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.path("data"),
                "-l",
                &self.path("log"),
                "-o",
                &self.options,
                "-w",
                "-t",
                "60",
                "start",
            ],
        )
    }

    /// Stops the server as a crash would (`-m immediate`: no checkpoint, connections cut).
    pub fn stop_immediately(&self) {
        let data = self.path("data");
        self.run("pg_ctl", &["-D", &data, "-m", "immediate", "-w", "stop"])
            .expect("stop the server");
    }

    /// `pg_ctl restart -m immediate`: connections cut, crash recovery, up again.
    pub fn restart_immediately(&self) {
        self.stop_immediately();
        self.start_again().expect("start the server again");
    }

    fn path(&self, rel: &str) -> String {
        self.dir.path().join(rel).display().to_string()
    }

    /// Runs one of the server's programs (as the owner when root) and waits for it.
    fn run(&self, program: &str, args: &[&str]) -> Result<(), String> {
        let mut cmd = Command::new(self.bin.join(program));
        cmd.args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .env_remove("PGDATA");
        if let Some(uid) = self.owner {
            cmd.uid(uid).gid(uid);
        }
        let out = cmd
            .output()
            .map_err(|e| format!("cannot run {program}: {e}"))?;
        if !out.status.success() {
            let log = std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default();
            return Err(format!(
                "{program} failed: {}{}\n{log}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(())
    }

    /// A connection string for the server's `postgres` database, with `password`.
    pub fn url_with(&self, password: &str) -> String {
        format!(
            "host={} user=orchestrate password={password} dbname=postgres",
            self.path("sock")
        )
    }

    /// A connection string that logs in.
    pub fn url(&self) -> String {
        self.url_with(PASSWORD)
    }

    /// Starts psql running `sql` in the background (killed when the child is dropped by the
    /// caller).
    pub fn psql_background(&self, sql: &str) -> std::process::Child {
        Command::new(self.bin.join("psql"))
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", sql, &self.url()])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("run psql")
    }

    /// Runs `sql` with psql, returning its unaligned output.
    pub fn psql(&self, sql: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .args([
                "-X",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
                &self.url(),
            ])
            .output()
            .expect("run psql");
        assert!(
            out.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let data = self.path("data");
        let _ = self.run("pg_ctl", &["-D", &data, "-m", "immediate", "-w", "stop"]);
    }
}

/// Where `initdb` and `pg_ctl` are: `pg_config --bindir`, else Debian's
/// `/usr/lib/postgresql/<version>/bin` (newest first), else `PATH`.
fn pg_bin_dir() -> Option<PathBuf> {
    let usable = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if out.status.success() && usable(&dir) {
            return Some(dir);
        }
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|dir| usable(dir))
        .collect();
    versions.sort_by_key(|dir| {
        dir.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    if let Some(dir) = versions.pop() {
        return Some(dir);
    }
    std::env::split_paths(&std::env::var_os("PATH")?).find(|dir| usable(dir))
}

/// The server, or `None` after saying why the test is skipped.
pub fn server() -> Option<PgServer> {
    match PgServer::start() {
        Ok(server) => Some(server),
        Err(why) => {
            skip_or_fail(&why);
            None
        }
    }
}

pub fn migrate(ws: &Ws, url: &str) -> std::process::Output {
    ws.cmd(&["db", "migrate", "--url", url])
        .output()
        .expect("run orchestrate db migrate")
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn db_migrate_creates_the_schema_once_and_again_changes_nothing() {
    let Some(pg) = server() else { return };
    let ws = Ws::new();
    let first = migrate(&ws, &pg.url());
    assert_eq!(first.status.code(), Some(0), "{}", text(&first.stderr));
    assert!(
        text(&first.stdout).starts_with("created the queue schema at ")
            && text(&first.stdout).contains(&format!("(version {})", orchestrate_pg::LATEST)),
        "{}",
        text(&first.stdout)
    );
    let latest = orchestrate_pg::LATEST.to_string();
    assert_eq!(
        pg.psql("SELECT max(version) FROM orchestrate_schema"),
        latest
    );
    assert_eq!(pg.psql("SELECT count(*) FROM orchestrate_tasks"), "0");
    let again = migrate(&ws, &pg.url());
    assert_eq!(again.status.code(), Some(0), "{}", text(&again.stderr));
    assert!(
        text(&again.stdout).contains(&format!("is up to date (version {latest})")),
        "{}",
        text(&again.stdout)
    );
    assert_eq!(pg.psql("SELECT count(*) FROM orchestrate_schema"), latest);
    // A database at version 1 (as an older orchestrate left it) is upgraded, keeping its rows.
    pg.psql(
        "DROP TABLE orchestrate_tasks_history; DROP INDEX orchestrate_tasks_finished; \
         ALTER TABLE orchestrate_tasks DROP COLUMN released, DROP COLUMN machine; \
         DROP TABLE orchestrate_controls, orchestrate_workers, orchestrate_spending, orchestrate_breakers; \
         DELETE FROM orchestrate_schema WHERE version > 1; \
         INSERT INTO orchestrate_tasks (role, id, payload) VALUES ('r', 'kept', 'x')",
    );
    let upgrade = migrate(&ws, &pg.url());
    assert_eq!(upgrade.status.code(), Some(0), "{}", text(&upgrade.stderr));
    assert!(
        text(&upgrade.stdout).contains(&format!("from version 1 to {latest}")),
        "{}",
        text(&upgrade.stdout)
    );
    assert_eq!(
        pg.psql("SELECT count(*) FROM orchestrate_tasks_history"),
        "0"
    );
    assert_eq!(pg.psql("SELECT id FROM orchestrate_tasks"), "kept");
}

#[test]
fn two_machines_migrating_at_once_apply_each_migration_once() {
    let Some(pg) = server() else { return };
    let ws = Ws::new();
    let url = pg.url();
    let runs: Vec<std::process::Child> = (0..4)
        .map(|_| {
            ws.cmd(&["db", "migrate", "--url", &url])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn migrate")
        })
        .collect();
    let outputs: Vec<std::process::Output> = runs
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    for out in &outputs {
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    }
    let created = outputs
        .iter()
        .filter(|o| text(&o.stdout).starts_with("created"))
        .count();
    assert_eq!(created, 1, "exactly one run creates the schema");
    assert_eq!(
        pg.psql("SELECT count(*) FROM orchestrate_schema"),
        orchestrate_pg::LATEST.to_string()
    );
}

#[test]
fn a_schema_newer_than_the_binary_is_refused_and_left_alone() {
    let Some(pg) = server() else { return };
    let ws = Ws::new();
    assert_eq!(migrate(&ws, &pg.url()).status.code(), Some(0));
    pg.psql("INSERT INTO orchestrate_schema (version) VALUES (99)");
    let out = migrate(&ws, &pg.url());
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!(
            "has schema version 99, newer than this orchestrate knows ({})",
            orchestrate_pg::LATEST
        )) && err.contains("upgrade orchestrate on this machine"),
        "{err}"
    );
    assert_eq!(pg.psql("SELECT max(version) FROM orchestrate_schema"), "99");
}

#[test]
fn a_wrong_password_or_no_server_says_so_without_printing_the_password() {
    let Some(pg) = server() else { return };
    let ws = Ws::new();
    let wrong = "Wr0ng-Pa55word-xyz";
    let out = migrate(&ws, &pg.url_with(wrong));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("cannot connect to the queue database at ")
            && err.contains("as orchestrate")
            && err.contains("password authentication failed"),
        "{err}"
    );
    assert!(
        !err.contains(wrong) && !text(&out.stdout).contains(wrong),
        "{err}"
    );

    let nowhere = "postgres://orchestrate:Zz9-secret-nowhere@127.0.0.1:1/postgres";
    let out = migrate(&ws, nowhere);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("cannot connect to the queue database at 127.0.0.1:1/postgres as orchestrate")
            && err.contains("check the URL"),
        "{err}"
    );
    assert!(!err.contains("Zz9-secret-nowhere"), "{err}");

    let out = ws
        .cmd(&["db", "migrate"])
        .env_remove("ORCHESTRATE_QUEUE_URL")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("no queue database given"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn the_password_can_come_from_a_file_or_the_environment_instead_of_the_url() {
    let Some(pg) = server() else { return };
    let ws = Ws::new();
    let without = format!("host={} user=orchestrate dbname=postgres", pg.path("sock"));
    std::fs::write(
        ws.join("pw.txt"),
        format!("{PASSWORD}\nignored second line\n"),
    )
    .unwrap();
    let from_file = ws
        .cmd(&["db", "migrate", "--url", &without])
        .env("ORCHESTRATE_QUEUE_PASSWORD_FILE", ws.join("pw.txt"))
        .env_remove("ORCHESTRATE_QUEUE_PASSWORD")
        .output()
        .unwrap();
    assert_eq!(
        from_file.status.code(),
        Some(0),
        "{}",
        text(&from_file.stderr)
    );
    let from_env = ws
        .cmd(&["db", "migrate", "--url", &without])
        .env_remove("ORCHESTRATE_QUEUE_PASSWORD_FILE")
        .env("ORCHESTRATE_QUEUE_PASSWORD", PASSWORD)
        .output()
        .unwrap();
    assert_eq!(
        from_env.status.code(),
        Some(0),
        "{}",
        text(&from_env.stderr)
    );
    assert!(
        text(&from_env.stdout).contains("is up to date"),
        "{}",
        text(&from_env.stdout)
    );
    let missing = ws
        .cmd(&["db", "migrate", "--url", &without])
        .env("ORCHESTRATE_QUEUE_PASSWORD_FILE", ws.join("no-such-file"))
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(2), "{}", text(&missing.stderr));
    assert!(
        text(&missing.stderr).contains("cannot read the queue database's password from")
            && text(&missing.stderr).contains("no-such-file"),
        "{}",
        text(&missing.stderr)
    );
}

/// A TCP port nobody listens on now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn tls_checks_the_servers_certificate_against_the_given_authority() {
    let port = free_port();
    let (_pg, ca) = match PgServer::start_tls(port) {
        Ok(started) => started,
        Err(why) => return skip_or_fail(&why),
    };
    let ws = Ws::new();
    let url =
        format!("postgres://orchestrate:{PASSWORD}@localhost:{port}/postgres?sslmode=require");
    let trusted = ws
        .cmd(&["db", "migrate", "--url", &url])
        .env("ORCHESTRATE_QUEUE_CA", &ca)
        .output()
        .unwrap();
    assert_eq!(trusted.status.code(), Some(0), "{}", text(&trusted.stderr));
    assert!(
        text(&trusted.stdout).contains("created the queue schema at localhost:"),
        "{}",
        text(&trusted.stdout)
    );
    // Without that authority the system's roots do not know the server: refused, and said why.
    let untrusted = ws
        .cmd(&["db", "migrate", "--url", &url])
        .env_remove("ORCHESTRATE_QUEUE_CA")
        .output()
        .unwrap();
    assert_eq!(
        untrusted.status.code(),
        Some(1),
        "{}",
        text(&untrusted.stderr)
    );
    let err = text(&untrusted.stderr);
    assert!(
        err.contains("cannot connect to the queue database at localhost:")
            && err.contains("certificate"),
        "{err}"
    );
    assert!(!err.contains(PASSWORD), "{err}");
    let _ = std::fs::remove_dir_all(ca.parent().unwrap());
}

#[test]
fn the_database_can_be_named_in_swarm_yaml_and_the_environment_and_flag_override_it() {
    let Some(pg) = server() else { return };
    let ws = Ws::new();
    std::fs::write(ws.join("swarm.yaml"), format!("queue: \"{}\"\n", pg.url())).unwrap();
    let from_file = ws
        .cmd(&["db", "migrate"])
        .env_remove("ORCHESTRATE_QUEUE_URL")
        .output()
        .unwrap();
    assert_eq!(
        from_file.status.code(),
        Some(0),
        "{}",
        text(&from_file.stderr)
    );
    assert!(
        text(&from_file.stdout).starts_with("created"),
        "{}",
        text(&from_file.stdout)
    );
    // The environment wins over the file, and the flag over both.
    let nowhere = "postgres://orchestrate@127.0.0.1:1/postgres";
    let env = ws
        .cmd(&["db", "migrate"])
        .env("ORCHESTRATE_QUEUE_URL", nowhere)
        .output()
        .unwrap();
    assert_eq!(env.status.code(), Some(1), "{}", text(&env.stderr));
    assert!(
        text(&env.stderr).contains("127.0.0.1:1/postgres"),
        "{}",
        text(&env.stderr)
    );
    let flag = ws
        .cmd(&["db", "migrate", "--url", &pg.url()])
        .env("ORCHESTRATE_QUEUE_URL", nowhere)
        .output()
        .unwrap();
    assert_eq!(flag.status.code(), Some(0), "{}", text(&flag.stderr));
    assert!(
        text(&flag.stdout).contains("up to date"),
        "{}",
        text(&flag.stdout)
    );
}

/// Runs `body` with a migrated database of `pg`, on a runtime of its own.
fn with_db<F, Fut>(pg: &PgServer, body: F)
where
    F: FnOnce(orchestrate_pg::Db, String) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut db = orchestrate_pg::Db::connect(&pg.url()).await.unwrap();
        orchestrate_pg::migrate(&mut db).await.unwrap();
        body(db, pg.url()).await;
    });
}

#[test]
fn a_name_is_queued_once_and_claimed_once_oldest_first() {
    use orchestrate_pg::queue::{claim, enqueue};
    use std::time::Duration;
    let Some(pg) = server() else { return };
    with_db(&pg, |mut db, _| async move {
        assert!(
            enqueue(&mut db, "r", "a", b"first", Some("c-1"), "test")
                .await
                .unwrap()
        );
        assert!(
            enqueue(&mut db, "r", "b", b"second", None, "test")
                .await
                .unwrap()
        );
        assert!(
            !enqueue(&mut db, "r", "a", b"again", None, "test")
                .await
                .unwrap()
        );
        // Another role's task of the same name is its own.
        assert!(
            enqueue(&mut db, "other", "a", b"x", None, "test")
                .await
                .unwrap()
        );
        let lease = Duration::from_secs(60);
        let first = claim(&db, "r", "w1", lease).await.unwrap().unwrap();
        assert_eq!(
            (
                first.id.as_str(),
                first.payload.as_slice(),
                first.attempt,
                first.fence
            ),
            ("a", &b"first"[..], 1, 1)
        );
        assert_eq!(first.correlation_id.as_deref(), Some("c-1"));
        let second = claim(&db, "r", "w2", lease).await.unwrap().unwrap();
        assert_eq!(second.id, "b");
        assert_eq!(claim(&db, "r", "w3", lease).await.unwrap(), None);
    });
}

#[test]
fn concurrent_claimers_skip_each_others_rows_and_never_share_a_task() {
    use orchestrate_pg::queue::{claim, enqueue};
    use std::time::Duration;
    let Some(pg) = server() else { return };
    with_db(&pg, |mut db, url| async move {
        for i in 0..40 {
            enqueue(&mut db, "r", &format!("t{i:02}"), b"x", None, "test")
                .await
                .unwrap();
        }
        let mut claimers = Vec::new();
        for w in 0..4 {
            let url = url.clone();
            claimers.push(tokio::spawn(async move {
                let db = orchestrate_pg::Db::connect(&url).await.unwrap();
                let mut got = Vec::new();
                while let Some(task) = claim(&db, "r", &format!("w{w}"), Duration::from_secs(60))
                    .await
                    .unwrap()
                {
                    got.push(task.id);
                }
                got
            }));
        }
        let mut all = Vec::new();
        for c in claimers {
            all.extend(c.await.unwrap());
        }
        all.sort();
        let expected: Vec<String> = (0..40).map(|i| format!("t{i:02}")).collect();
        assert_eq!(all, expected, "every task claimed exactly once");
    });
}

#[test]
fn a_completion_asked_again_after_its_answer_was_lost_is_accepted_once_and_a_stale_one_never() {
    use orchestrate_pg::queue::{Done, claim, complete_all, enqueue};
    use std::time::Duration;
    let Some(pg) = server() else { return };
    with_db(&pg, |mut db, _| async move {
        for id in ["a", "b"] {
            enqueue(&mut db, "r", id, b"x", None, "test").await.unwrap();
        }
        let a = claim(&db, "r", "m:1", Duration::from_secs(60))
            .await
            .unwrap()
            .unwrap();
        let b = claim(&db, "r", "m:1", Duration::from_secs(60))
            .await
            .unwrap()
            .unwrap();
        let done = |id: &str, fence: i64, success: bool| Done {
            id: id.to_string(),
            fence,
            success,
            status: "{}".into(),
        };
        let first = complete_all(&db, "r", &[done("a", a.fence, true)])
            .await
            .unwrap();
        assert_eq!(first, vec!["a".to_string()]);
        // The same completion again (its first answer lost): accepted, nothing changed.
        let again = complete_all(
            &db,
            "r",
            &[done("a", a.fence, true), done("b", b.fence, false)],
        )
        .await
        .unwrap();
        let mut again = again;
        again.sort();
        assert_eq!(again, vec!["a".to_string(), "b".to_string()]);
        // A different end, or another fence, is refused.
        assert!(
            complete_all(&db, "r", &[done("a", a.fence, false)])
                .await
                .unwrap()
                .is_empty()
        );
        assert!(
            complete_all(&db, "r", &[done("b", b.fence + 1, false)])
                .await
                .unwrap()
                .is_empty()
        );
        // Archived meanwhile: still recognised.
        orchestrate_pg::queue::archive_finished(&db, Duration::ZERO, 100)
            .await
            .unwrap();
        assert_eq!(
            db.client
                .query_one("SELECT count(*) FROM orchestrate_tasks", &[])
                .await
                .unwrap()
                .get::<_, i64>(0),
            0
        );
        assert_eq!(
            complete_all(&db, "r", &[done("a", a.fence, true)])
                .await
                .unwrap(),
            vec!["a".to_string()]
        );
    });
}

#[test]
fn an_expired_lease_is_requeued_and_the_stale_holder_is_fenced_off() {
    use orchestrate_pg::queue::{claim, complete, enqueue, heartbeat, requeue_expired};
    use std::time::Duration;
    let Some(pg) = server() else { return };
    with_db(&pg, |mut db, _| async move {
        enqueue(&mut db, "r", "t", b"x", None, "test")
            .await
            .unwrap();
        // A lease of zero has run out by the next statement.
        let stale = claim(&db, "r", "stopped", Duration::ZERO)
            .await
            .unwrap()
            .unwrap();
        let expired = requeue_expired(&db, "r", 3).await.unwrap();
        assert_eq!(expired.len(), 1);
        assert_eq!(
            (expired[0].state.as_str(), expired[0].attempt),
            ("queued", 1)
        );
        // The stale holder wakes up: its heartbeat and its completion are refused.
        assert!(
            !heartbeat(&db, "r", "t", stale.fence, Duration::from_secs(60))
                .await
                .unwrap()
        );
        assert!(
            !complete(&db, "r", "t", stale.fence, true, "{}")
                .await
                .unwrap()
        );
        let fresh = claim(&db, "r", "alive", Duration::from_secs(60))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(fresh.attempt, 2);
        assert!(fresh.fence > stale.fence);
        assert!(
            heartbeat(&db, "r", "t", fresh.fence, Duration::from_secs(60))
                .await
                .unwrap()
        );
        assert!(
            !complete(&db, "r", "t", stale.fence, false, "{}")
                .await
                .unwrap()
        );
        assert!(
            complete(&db, "r", "t", fresh.fence, true, r#"{"success": true}"#)
                .await
                .unwrap()
        );
        // Finished: nothing to claim, and the record is the winner's.
        assert_eq!(claim(&db, "r", "x", Duration::ZERO).await.unwrap(), None);
        let row = db
            .client
            .query_one(
                "SELECT state, status->>'success', attempt FROM orchestrate_tasks WHERE id = 't'",
                &[],
            )
            .await
            .unwrap();
        assert_eq!(row.get::<_, String>(0), "processed");
        assert_eq!(row.get::<_, Option<String>>(1).as_deref(), Some("true"));
        assert_eq!(row.get::<_, i32>(2), 2);
    });
}

#[test]
fn a_task_whose_leases_keep_running_out_fails_after_max_attempts() {
    use orchestrate_pg::queue::{claim, enqueue, requeue_expired};
    use std::time::Duration;
    let Some(pg) = server() else { return };
    with_db(&pg, |mut db, _| async move {
        enqueue(&mut db, "r", "t", b"x", None, "test")
            .await
            .unwrap();
        for attempt in 1..=2 {
            let task = claim(&db, "r", "dies", Duration::ZERO)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(task.attempt, attempt);
            let expired = requeue_expired(&db, "r", 2).await.unwrap();
            let want = if attempt < 2 { "queued" } else { "failed" };
            assert_eq!(expired[0].state, want);
        }
        assert_eq!(claim(&db, "r", "x", Duration::ZERO).await.unwrap(), None);
    });
}

#[test]
fn a_finished_tasks_name_can_be_used_again_and_finished_rows_leave_the_hot_table() {
    use orchestrate_pg::queue::{archive_finished, claim, complete, enqueue};
    use std::time::Duration;
    let Some(pg) = server() else { return };
    with_db(&pg, |mut db, _| async move {
        let lease = Duration::from_secs(60);
        enqueue(&mut db, "r", "t", b"one", None, "test")
            .await
            .unwrap();
        let first = claim(&db, "r", "w", lease).await.unwrap().unwrap();
        // Running: the name is taken.
        assert!(
            !enqueue(&mut db, "r", "t", b"two", None, "test")
                .await
                .unwrap()
        );
        assert!(
            complete(&db, "r", "t", first.fence, true, "{}")
                .await
                .unwrap()
        );
        // Finished: the name is free again; the old task is kept in the history.
        assert!(
            enqueue(&mut db, "r", "t", b"two", None, "test")
                .await
                .unwrap()
        );
        let again = claim(&db, "r", "w", lease).await.unwrap().unwrap();
        assert_eq!((again.payload.as_slice(), again.attempt), (&b"two"[..], 1));
        assert!(again.fence >= 1);
        assert_eq!(count(&db, "orchestrate_tasks_history").await, 1);
        // Archiving moves finished rows only, a batch at a time.
        for i in 0..5 {
            let id = format!("done{i}");
            enqueue(&mut db, "r", &id, b"x", None, "test")
                .await
                .unwrap();
        }
        enqueue(&mut db, "r", "queued", b"x", None, "test")
            .await
            .unwrap();
        while let Some(task) = claim(&db, "r", "w", lease).await.unwrap() {
            if task.id.starts_with("done") {
                complete(&db, "r", &task.id, task.fence, task.id != "done3", "{}")
                    .await
                    .unwrap();
            } else if task.id == "queued" {
                break;
            }
        }
        assert_eq!(archive_finished(&db, Duration::ZERO, 3).await.unwrap(), 3);
        assert_eq!(archive_finished(&db, Duration::ZERO, 3).await.unwrap(), 2);
        assert_eq!(archive_finished(&db, Duration::ZERO, 3).await.unwrap(), 0);
        // What lives stays: the running `t` and `queued`.
        assert_eq!(count(&db, "orchestrate_tasks").await, 2);
        assert_eq!(count(&db, "orchestrate_tasks_history").await, 6);
        // Nothing finished recently enough is moved under a longer age.
        assert_eq!(
            archive_finished(&db, Duration::from_secs(3600), 10)
                .await
                .unwrap(),
            0
        );
    });
}

/// Rows in `table`.
async fn count(db: &orchestrate_pg::Db, table: &str) -> i64 {
    db.client
        .query_one(format!("SELECT count(*) FROM {table}").as_str(), &[])
        .await
        .unwrap()
        .get::<_, i64>(0)
}
