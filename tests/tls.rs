//! TLS to PostgreSQL (source and run catalog), MariaDB and an MQTT broker, against servers of the
//! test's own on loopback that accept TLS only, with a CA and a server certificate made here:
//! `verify-full` lands the rows, plain TCP is refused by the server, `verify-full` under a name
//! the certificate does not hold and a CA that did not sign it are refused by Sluice, and
//! `verify-ca` / `require` connect as their names say.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// A CA and a server certificate it signed for `names`, as PEM files in `dir`: `ca.pem`,
/// `server.pem`, `server.key`; and `other-ca.pem`, a CA that signed nothing here.
fn certificates(dir: &Path, names: &[&str]) -> PathBuf {
    let ca = |cn: &str| {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, cn);
        let cert = params.self_signed(&key).unwrap();
        (cert, key)
    };
    let (ca_cert, ca_key) = ca("sluice test CA");
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    let cert = params.signed_by(&key, &ca_cert, &ca_key).unwrap();
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("ca.pem"), ca_cert.pem()).unwrap();
    std::fs::write(dir.join("other-ca.pem"), ca("another CA").0.pem()).unwrap();
    std::fs::write(dir.join("server.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("server.key"), key.serialize_pem()).unwrap();
    dir.to_path_buf()
}

fn wait_for_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not listen on {port}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A PostgreSQL cluster of its own (Debian's binaries, run as `postgres`) on a free port, with
/// `ssl = on` and a pg_hba that accepts TLS connections only; stopped and removed on drop.
struct TlsPostgres {
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
    _server: Child,
}

impl TlsPostgres {
    fn start(certs: &Path) -> Self {
        assert!(Command::new("bash").arg(root().join("scripts/postgres.sh")).status().unwrap().success());
        let version = std::fs::read_dir("/usr/lib/postgresql").unwrap().flatten().map(|e| e.path()).max().unwrap();
        let bin = version.join("bin");
        // Owned by `postgres`, outside the test's private temporary directory.
        let dir = std::env::temp_dir().join(format!("sluice-pg-tls-{}-{}", std::process::id(), free_port()));
        std::fs::create_dir_all(&dir).unwrap();
        for file in ["server.pem", "server.key"] {
            std::fs::copy(certs.join(file), dir.join(file)).unwrap();
        }
        let as_postgres = |program: &Path| {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", "postgres", "--"]).arg(program);
            cmd
        };
        assert!(Command::new("chown").args(["-R", "postgres:postgres"]).arg(&dir).status().unwrap().success());
        assert!(Command::new("chmod").arg("600").arg(dir.join("server.key")).status().unwrap().success());
        let data = dir.join("data");
        let out = as_postgres(&bin.join("initdb")).args(["-A", "trust", "-U", "postgres", "-D"]).arg(&data).output().unwrap();
        assert!(out.status.success(), "initdb: {}", String::from_utf8_lossy(&out.stderr));
        std::fs::write(data.join("pg_hba.conf"), "local all all trust\nhostssl all all 127.0.0.1/32 trust\n").unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.join("server.log")).unwrap();
        let server = Child(
            as_postgres(&bin.join("postgres"))
                .arg("-D")
                .arg(&data)
                .args(["-p", &port.to_string(), "-c", "listen_addresses=127.0.0.1", "-c", "ssl=on"])
                .arg("-c")
                .arg(format!("unix_socket_directories={}", dir.display()))
                .arg("-c")
                .arg(format!("ssl_cert_file={}", dir.join("server.pem").display()))
                .arg("-c")
                .arg(format!("ssl_key_file={}", dir.join("server.key").display()))
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap(),
        );
        wait_for_port(port, "the TLS PostgreSQL");
        let pg = Self { dir, bin, port, _server: server };
        pg.psql("CREATE DATABASE tlsdb");
        pg.psql_in("tlsdb", "CREATE TABLE readings AS SELECT g AS id, 'r' || g AS name FROM generate_series(1, 250) AS g");
        pg
    }

    fn psql(&self, sql: &str) {
        self.psql_in("postgres", sql);
    }

    fn psql_in(&self, db: &str, sql: &str) {
        let out = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("psql"))
            .arg("-h")
            .arg(&self.dir)
            .args(["-p", &self.port.to_string(), "-d", db, "-v", "ON_ERROR_STOP=1", "-c", sql])
            .output()
            .unwrap();
        assert!(out.status.success(), "{sql}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

impl Drop for TlsPostgres {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn postgres_sources_and_the_run_catalog_speak_tls_as_their_mode_says() {
    let dir = tempfile::tempdir().unwrap();
    let certs = certificates(&dir.path().join("certs"), &["db.internal", "127.0.0.1"]);
    let pg = TlsPostgres::start(&certs);
    let lake = dir.path().join("lake");
    let job = |name: &str, host: &str, tls: &str| {
        let path = dir.path().join(format!("{name}.toml"));
        std::fs::write(
            &path,
            format!(
                "[job]\nname = \"{name}\"\n\n[sources.readings]\nkind = \"postgres\"\n\n[sources.readings.connection]\n\
                 host = \"{host}\"\nport = {}\nuser = \"postgres\"\ndatabase = \"tlsdb\"\n{tls}\n\n\
                 [sources.readings.read]\ntable = \"readings\"\n\n[sink]\nasset = \"{name}\"\n",
                pg.port
            ),
        )
        .unwrap();
        path
    };
    let ca = certs.join("ca.pem");
    let other = certs.join("other-ca.pem");
    let catalog = format!(
        "postgres://postgres@127.0.0.1:{}/tlsdb?sslmode=verify-full&sslrootcert={}",
        pg.port,
        ca.display()
    );
    let run = |path: &Path, catalog: &str| sluice_at(&lake).env("SLUICE_RUNS", catalog).arg("run").arg(path).output().unwrap();

    // verify-full with the CA that signed the server's certificate; the run recorded in the
    // catalog on the same server, over TLS too.
    let full = job("full", "127.0.0.1", &format!("tls = {{ mode = \"verify-full\", ca = \"{}\" }}", ca.display()));
    let stdout = ok(run(&full, &catalog), "verify-full");
    assert!(stdout.contains("full@0: 250 rows"), "{stdout}");
    let runs = ok(sluice_at(&lake).env("SLUICE_RUNS", &catalog).args(["runs", "list"]).output().unwrap(), "runs list");
    assert!(runs.contains("full") && runs.contains("succeeded"), "{runs}");

    // Plain TCP: the server accepts TLS only. (The catalog is a local file for these.)
    let sqlite = dir.path().join("runs.db").display().to_string();
    let plain = job("plain", "127.0.0.1", "");
    let out = run(&plain, &sqlite);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("no encryption"), "{stderr}");

    // The certificate does not name `localhost`: verify-full refuses, verify-ca accepts.
    let wrong_name = job("wrong_name", "localhost", &format!("tls = {{ mode = \"verify-full\", ca = \"{}\" }}", ca.display()));
    let out = run(&wrong_name, &sqlite);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("over TLS") && stderr.contains("invalid peer certificate"), "{stderr}");
    let chain_only = job("chain_only", "localhost", &format!("tls = {{ mode = \"verify-ca\", ca = \"{}\" }}", ca.display()));
    assert!(ok(run(&chain_only, &sqlite), "verify-ca").contains("chain_only@0: 250 rows"));

    // A CA that did not sign it: refused even under the right name; `require` checks nothing.
    let stranger = job("stranger", "127.0.0.1", &format!("tls = {{ mode = \"verify-full\", ca = \"{}\" }}", other.display()));
    let out = run(&stranger, &sqlite);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("invalid peer certificate"), "{stderr}");
    let encrypted = job("encrypted", "localhost", "tls = { mode = \"require\" }");
    assert!(ok(run(&encrypted, &sqlite), "require").contains("encrypted@0: 250 rows"));

    // The run catalog's URL takes libpq's parameters: without them, plain TCP is refused there
    // as well (a catalog that cannot be reached does not stop the run; the warning says why).
    let out = run(&full, &format!("postgres://postgres@127.0.0.1:{}/tlsdb", pg.port));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("run catalog") && stderr.contains("no encryption") && stderr.contains("not recorded"), "{stderr}");
}

#[test]
fn an_mqtt_source_reads_a_tls_listener_and_checks_its_certificate() {
    assert!(Command::new("bash").arg(root().join("scripts/mosquitto.sh")).status().unwrap().success());
    let dir = tempfile::tempdir().unwrap();
    let certs = certificates(&dir.path().join("certs"), &["127.0.0.1"]);
    // Mosquitto reads its certificates after dropping to its own user: somewhere it can read.
    let shared = std::env::temp_dir().join(format!("sluice-mqtt-tls-{}-{}", std::process::id(), free_port()));
    std::fs::create_dir_all(&shared).unwrap();
    for file in ["ca.pem", "server.pem", "server.key"] {
        std::fs::copy(certs.join(file), shared.join(file)).unwrap();
    }
    let _ = Command::new("chmod").args(["-R", "a+rX"]).arg(&shared).status();
    let (plain, tls) = (free_port(), free_port());
    let conf = shared.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "per_listener_settings false\nallow_anonymous true\npersistence false\n\
             listener {plain} 127.0.0.1\n\
             listener {tls} 127.0.0.1\ncafile {0}/ca.pem\ncertfile {0}/server.pem\nkeyfile {0}/server.key\n",
            shared.display()
        ),
    )
    .unwrap();
    let bin = if Path::new("/usr/sbin/mosquitto").exists() { "/usr/sbin/mosquitto" } else { "mosquitto" };
    let log = std::fs::File::create(dir.path().join("mosquitto.log")).unwrap();
    let _broker = Child(Command::new(bin).arg("-c").arg(&conf).stdout(Stdio::null()).stderr(log).spawn().unwrap());
    wait_for_port(tls, "mosquitto's TLS listener");
    wait_for_port(plain, "mosquitto");

    let example = std::fs::read_to_string(root().join("examples/mqtt_device_events.toml")).unwrap();
    let anchor = "client_id = \"${MQTT_CLIENT_ID:-sluice-device-events}\"\n";
    assert!(example.contains(anchor), "the example's connection moved");
    let job = |name: &str, tls: &str| {
        let path = dir.path().join(format!("{name}.toml"));
        std::fs::write(&path, example.replace(anchor, &format!("{anchor}{tls}\n"))).unwrap();
        path
    };
    let base = format!("sluice-tls/{}", std::process::id());
    let run = |path: &Path, id: &str| {
        sluice_at(&dir.path().join("lake"))
            .env("SLUICE_SPOOL_DIR", dir.path().join("spool"))
            .env("MQTT_PORT", tls.to_string())
            .env("MQTT_TOPIC", format!("{base}/+/events"))
            .env("MQTT_CLIENT_ID", format!("sluice-tls-{id}-{}", std::process::id()))
            .env("MQTT_BATCH_SECONDS", "1")
            .env("MQTT_STOP_WHEN_IDLE_S", "3")
            .arg("run")
            .arg(path)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };

    let verified = run(&job("verified", &format!("tls = {{ mode = \"verify-full\", ca = \"{}\" }}", certs.join("ca.pem").display())), "ok");
    std::thread::sleep(Duration::from_secs(3)); // subscribed (the job's session is new)
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let options = rumqttc::MqttOptions::new(format!("sluice-tls-pub-{}", std::process::id()), "127.0.0.1", plain);
        let (client, mut events) = rumqttc::AsyncClient::new(options, 100);
        for i in 0..20 {
            let payload = format!("{{\"device_id\": \"d{}\", \"ts\": \"2026-11-24T08:00:{i:02}\", \"temperature\": {i}.5}}", i % 3);
            client.publish(format!("{base}/d{}/events", i % 3), rumqttc::QoS::AtLeastOnce, false, payload).await.unwrap();
        }
        let mut acked = 0;
        while acked < 20 {
            if let rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_)) = events.poll().await.unwrap() {
                acked += 1;
            }
        }
    });
    let out = verified.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("20 read = 20 landed"), "{stdout}");

    // A CA that did not sign the broker's certificate: a clear error, not a silent wait.
    let stranger = run(&job("stranger", &format!("tls = {{ ca = \"{}\" }}", certs.join("other-ca.pem").display())), "bad");
    let out = stranger.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("cannot connect to the MQTT broker"), "{stderr}");
    let _ = std::fs::remove_dir_all(&shared);
}

/// A MariaDB server of its own (Debian's binaries, as `mysql`) on a free port, with
/// `require_secure_transport`; user `sluice` (password `tls-pw`) from anywhere; stopped on drop.
struct TlsMariadb {
    dir: PathBuf,
    port: u16,
    _server: Child,
}

impl TlsMariadb {
    fn start(certs: &Path) -> Self {
        assert!(Command::new("bash").arg(root().join("scripts/mariadb.sh")).status().unwrap().success());
        let dir = std::env::temp_dir().join(format!("sluice-mariadb-tls-{}-{}", std::process::id(), free_port()));
        std::fs::create_dir_all(&dir).unwrap();
        for file in ["ca.pem", "server.pem", "server.key"] {
            std::fs::copy(certs.join(file), dir.join(file)).unwrap();
        }
        let data = dir.join("data");
        assert!(Command::new("chown").args(["-R", "mysql:mysql"]).arg(&dir).status().unwrap().success());
        let out = Command::new("mariadb-install-db")
            .arg(format!("--datadir={}", data.display()))
            .args(["--user=mysql", "--auth-root-authentication-method=normal", "--skip-test-db"])
            .output()
            .unwrap();
        assert!(out.status.success(), "mariadb-install-db: {}", String::from_utf8_lossy(&out.stderr));
        let port = free_port();
        let log = std::fs::File::create(dir.join("server.log")).unwrap();
        let arg = |name: &str, file: &str| format!("--{name}={}", dir.join(file).display());
        let server = Child(
            Command::new("/usr/sbin/mariadbd")
                .args(["--no-defaults", "--user=mysql", "--bind-address=127.0.0.1", "--require-secure-transport=ON"])
                .arg(format!("--datadir={}", data.display()))
                .arg(format!("--port={port}"))
                .args([arg("socket", "sock"), arg("pid-file", "pid"), arg("ssl-ca", "ca.pem"), arg("ssl-cert", "server.pem")])
                .arg(arg("ssl-key", "server.key"))
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap(),
        );
        wait_for_port(port, "the TLS MariaDB");
        let db = Self { dir, port, _server: server };
        db.sql(
            "DELETE FROM mysql.global_priv WHERE User = ''; FLUSH PRIVILEGES; \
             CREATE USER 'sluice'@'localhost' IDENTIFIED BY 'tls-pw'; CREATE USER 'sluice'@'127.0.0.1' IDENTIFIED BY 'tls-pw'; \
             GRANT ALL ON *.* TO 'sluice'@'localhost'; GRANT ALL ON *.* TO 'sluice'@'127.0.0.1'; CREATE DATABASE tlsdb; \
             USE tlsdb; CREATE TABLE readings (id INT PRIMARY KEY, name VARCHAR(20)); \
             INSERT INTO readings SELECT seq, CONCAT('r', seq) FROM seq_1_to_250",
        );
        db
    }

    fn sql(&self, sql: &str) {
        let socket = format!("--socket={}", self.dir.join("sock").display());
        let out = Command::new("mysql").args([socket.as_str(), "-u", "root", "-e", sql]).output().unwrap();
        assert!(out.status.success(), "{sql}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

impl Drop for TlsMariadb {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn mysql_sources_speak_tls_as_their_mode_says() {
    let dir = tempfile::tempdir().unwrap();
    let certs = certificates(&dir.path().join("certs"), &["db.internal", "127.0.0.1"]);
    let db = TlsMariadb::start(&certs);
    let lake = dir.path().join("lake");
    let job = |name: &str, host: &str, tls: &str| {
        let path = dir.path().join(format!("{name}.toml"));
        std::fs::write(
            &path,
            format!(
                "[job]\nname = \"{name}\"\n\n[sources.readings]\nkind = \"mysql\"\n\n[sources.readings.connection]\n\
                 host = \"{host}\"\nport = {}\nuser = \"sluice\"\npassword = {{ env = \"TLS_DB_PASSWORD\" }}\n\
                 database = \"tlsdb\"\n{tls}\n\n[sources.readings.read]\ntable = \"readings\"\n\n[sink]\nasset = \"{name}\"\n",
                db.port
            ),
        )
        .unwrap();
        path
    };
    let run = |path: &Path| sluice_at(&lake).env("TLS_DB_PASSWORD", "tls-pw").arg("run").arg(path).output().unwrap();
    let ca = certs.join("ca.pem");
    let full = job("full", "127.0.0.1", &format!("tls = {{ mode = \"verify-full\", ca = \"{}\" }}", ca.display()));
    assert!(ok(run(&full), "verify-full").contains("full@0: 250 rows"));
    let out = run(&job("plain", "127.0.0.1", ""));
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The same user and password over plain TCP: refused by the server (which requires TLS).
    assert!(!out.status.success() && (stderr.contains("insecure transport") || stderr.contains("Access denied")), "{stderr}");
    let out = run(&job("wrong_name", "localhost", &format!("tls = {{ ca = \"{}\" }}", ca.display())));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("over TLS"), "{stderr}");
    let out = run(&job("chain_only", "localhost", &format!("tls = {{ mode = \"verify-ca\", ca = \"{}\" }}", ca.display())));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("verify-ca\" is not available for MySQL"), "{stderr}");
    let other = certs.join("other-ca.pem");
    let out = run(&job("stranger", "127.0.0.1", &format!("tls = {{ ca = \"{}\" }}", other.display())));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("over TLS"), "{stderr}");
    assert!(ok(run(&job("encrypted", "localhost", "tls = { mode = \"require\" }")), "require").contains("encrypted@0: 250 rows"));
}
