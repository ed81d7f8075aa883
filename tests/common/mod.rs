//! Shared by the tests that run the `sluice` binary: the command, its output, child processes.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root (examples/ and scripts/ are found from here).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The `sluice` binary with quiet logs and no workspace or assets location from the caller's
/// environment.
pub fn sluice_cmd() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice"));
    cmd.env("SLUICE_LOG", "warn").env_remove("SLUICE_WORKSPACE").env_remove("SLUICE_ASSETS");
    cmd
}

/// The `sluice` binary with its assets in `assets`, run from the repository root (where
/// `examples/` are).
pub fn sluice_at(assets: &std::path::Path) -> Command {
    let mut cmd = sluice_cmd();
    cmd.env("SLUICE_ASSETS", assets).current_dir(root());
    cmd
}

/// Runs `sluice ARGS` with its assets in `assets`; its stdout, failing the test on an error.
pub fn run_at(assets: &std::path::Path, args: &[&str]) -> String {
    ok(sluice_at(assets).args(args).output().unwrap(), &args.join(" "))
}

/// The stdout of a command that must succeed; otherwise fails with both streams.
pub fn ok(output: Output, what: &str) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{what} failed\nstdout:\n{stdout}\nstderr:\n{stderr}");
    stdout
}

/// The first value of the first row `sluice sql` printed (a table): e.g. a count.
pub fn first_value(table: &str) -> String {
    table
        .lines()
        .find(|l| l.starts_with("| ") && l.trim_start_matches("| ").starts_with(|c: char| c.is_ascii_digit()))
        .unwrap_or("")
        .replace(['|', ' '], "")
}

/// A child process, killed on drop.
pub struct Child(pub std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A scheduler and executors as processes of their own, stopped on drop.
pub struct Cluster {
    /// The scheduler's port.
    pub port: u16,
    /// `df://127.0.0.1:PORT`, for `--cluster`.
    pub url: String,
    _processes: Vec<Child>,
}

/// Starts a scheduler and one executor per id (`--vcores 1`, ports picked by the system), each a
/// `command(name)` with info logs in `logs/NAME.log`, and waits until the executors registered.
pub fn spawn_cluster(command: impl Fn(&str) -> Command, logs: &Path, executors: &[&str]) -> Cluster {
    let port = free_port();
    let spawn = |name: &str, args: &[&str]| {
        let log = std::fs::File::create(logs.join(format!("{name}.log"))).unwrap();
        Child(command(name).args(args).env("SLUICE_LOG", "info").stdout(log.try_clone().unwrap()).stderr(log).spawn().unwrap())
    };
    let mut processes = vec![spawn("scheduler", &["scheduler", "--port", &port.to_string()])];
    let scheduler = format!("127.0.0.1:{port}");
    for id in executors {
        let args = ["executor", "--scheduler", &scheduler, "--id", id, "--flight-port", "0", "--grpc-port", "0", "--vcores", "1"];
        processes.push(spawn(id, &args));
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while registered_executors(port) < executors.len() {
        assert!(std::time::Instant::now() < deadline, "{} executors did not register within 60 s", executors.len());
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    Cluster { port, url: format!("df://{scheduler}"), _processes: processes }
}

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A linear TorchScript model from 3 inputs with `weights` (one row per output) and `bias`.
pub fn linear(path: &Path, weights: &[f32], bias: &[f32]) {
    let outputs = bias.len() as i64;
    let mut vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let mut layer = tch::nn::linear(vs.root(), 3, outputs, Default::default());
    tch::no_grad(|| {
        layer.ws.copy_(&tch::Tensor::from_slice(weights).view([outputs, 3]));
        if let Some(bs) = layer.bs.as_mut() {
            bs.copy_(&tch::Tensor::from_slice(bias));
        }
    });
    vs.freeze();
    let example = tch::Tensor::zeros([2, 3], (tch::Kind::Float, tch::Device::Cpu));
    let module = tch::CModule::create_by_tracing("Linear", "forward", &[example], &mut |xs| vec![tch::nn::Module::forward(&layer, &xs[0])]).unwrap();
    module.save(path).unwrap();
}

/// `y = 0.5a - 2b + 0.25c + 1`.
pub fn linear_model(path: &Path) {
    linear(path, &[0.5, -2.0, 0.25], &[1.0]);
}


/// A 3 -> HIDDEN -> HIDDEN -> 1 ReLU network with seeded weights, saved as TorchScript: wide
/// enough and a run scores slowly enough to be interrupted midway.
pub fn mlp_model(path: &Path, hidden: i64, seed: i64) {
    use tch::nn::{self, Module};
    tch::manual_seed(seed);
    let mut vs = nn::VarStore::new(tch::Device::Cpu);
    let net = nn::seq()
        .add(nn::linear(vs.root() / "a", 3, hidden, Default::default()))
        .add_fn(|x| x.relu())
        .add(nn::linear(vs.root() / "b", hidden, hidden, Default::default()))
        .add_fn(|x| x.relu())
        .add(nn::linear(vs.root() / "c", hidden, 1, Default::default()));
    vs.freeze();
    let example = tch::Tensor::zeros([2, 3], (tch::Kind::Float, tch::Device::Cpu));
    let module =
        tch::CModule::create_by_tracing("Mlp", "forward", &[example], &mut |xs| vec![net.forward(&xs[0])]).unwrap();
    module.save(path).unwrap();
}

/// The whole HTTP response to `GET path` on loopback `port` (empty when nothing answers).
pub fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else { return String::new() };
    let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return String::new();
    }
    let mut response = String::new();
    let _ = s.read_to_string(&mut response);
    response
}

/// Executors the scheduler on `port` lists in its REST API.
pub fn registered_executors(port: u16) -> usize {
    http_get(port, "/api/executors").matches("\"id\"").count()
}

/// `METHOD path` on loopback `port` with extra header lines; the whole response.
pub fn http_request(port: u16, method: &str, path: &str, headers: &[&str]) -> String {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else { return String::new() };
    let extra: String = headers.iter().map(|h| format!("{h}\r\n")).collect();
    let req = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{extra}Content-Length: 0\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return String::new();
    }
    let mut response = String::new();
    let _ = s.read_to_string(&mut response);
    response
}

/// Accounts whose churn follows tickets and tenure, keys `first..first+n`; `older` adds one
/// standard deviation of tenure (17.3 months for 0..59) to every account.
pub fn churn_accounts(first: i64, n: i64, older: bool) -> String {
    let shift = if older { " + 17.3" } else { "" };
    format!(
        "SELECT value AS account_id, CAST(value % 60 AS DOUBLE){shift} AS tenure, CAST((value * 37) % 500 AS DOUBLE) AS spend, \
         value % 7 AS tickets, (value % 7) * 10 - (value % 60) + ((value * 7919) % 13) > 25 AS churned \
         FROM (SELECT unnest(range({first}, {})) AS value)",
        first + n
    )
}

/// A lake at `lake` with a churn model trained on a stratified split of `accounts` (registered
/// as `churn@1`), and the assets `today` (drawn like the training data) and `older` (tenure moved
/// by one standard deviation).
pub fn churn_lake(lake: &Path, model: &Path) {
    run_at(lake, &["asset", "write", "accounts", "--sql", &churn_accounts(0, 12_000, false)]);
    run_at(lake, &["split", "accounts", "--method", "stratified", "--key", "account_id", "--label", "churned"]);
    run_at(
        lake,
        &[
            "train", "accounts_split", "--label", "churned", "--features", "tenure,spend,tickets", "--epochs", "15",
            "--register", "churn", "--output", model.to_str().unwrap(),
        ],
    );
    run_at(lake, &["asset", "write", "today", "--sql", &churn_accounts(100_000, 12_000, false)]);
    run_at(lake, &["asset", "write", "older", "--sql", &churn_accounts(100_000, 12_000, true)]);
}

/// `METHOD path` with a body on loopback `port`: the status code and the response body.
pub fn http_call(port: u16, method: &str, path: &str, headers: &[&str], body: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let extra: String = headers.iter().map(|h| format!("{h}\r\n")).collect();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{extra}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = s.write_all(req.as_bytes());
    let mut response = String::new();
    let _ = s.read_to_string(&mut response);
    let status = response.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

/// One HTTP/1.1 request with a binary body on loopback `port`: the status, the response's
/// headers (lower-cased names) and its body bytes.
pub fn http_call_bytes(
    port: u16,
    method: &str,
    path: &str,
    headers: &[&str],
    body: &[u8],
) -> (u16, std::collections::HashMap<String, String>, Vec<u8>) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let extra: String = headers.iter().map(|h| format!("{h}\r\n")).collect();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = s.write_all(head.as_bytes());
    let _ = s.write_all(body);
    let mut response = Vec::new();
    let _ = s.read_to_end(&mut response);
    let split = response.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(response.len());
    let head = String::from_utf8_lossy(&response[..split]).to_string();
    let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let fields = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, fields, response.get(split + 4..).unwrap_or_default().to_vec())
}
