//! The installer for real: `GET /install.sh` fetched from a real server and
//! run with `sh` in a throw-away root (`--prefix`, `--unit-dir`,
//! `--state-dir`, a fake `systemctl` first on PATH recording its calls),
//! producing an enrolled, online agent from the downloaded binary; run
//! again it upgrades in place. Refusals (checksum mismatch, no token, an
//! unknown architecture) change nothing. Also `shellcheck` on the script
//! as served and `systemd-analyze verify` on the generated units.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use rm_testkit::{AgentProcess, Api, TestServer};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_restic-manager");
const LIMIT: Duration = Duration::from_secs(30);
const UNIT: &str = "restic-manager-agent.service";

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A throw-away root: where the installer puts things, and a folder of
/// fake commands put first on PATH.
struct Root {
    dir: tempfile::TempDir,
}

impl Root {
    fn new() -> Root {
        let root = Root {
            dir: tempfile::tempdir().unwrap(),
        };
        std::fs::create_dir(root.fake()).unwrap();
        root.fake_command(
            "systemctl",
            &format!(
                "echo \"$*\" >> '{}'\n",
                root.path("systemctl.calls").display()
            ),
        );
        root
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn fake(&self) -> PathBuf {
        self.path("fake-bin")
    }

    fn prefix(&self) -> PathBuf {
        self.path("usr/local")
    }

    fn installed(&self) -> PathBuf {
        self.prefix().join("bin/restic-manager")
    }

    fn units(&self) -> PathBuf {
        self.path("units")
    }

    fn state(&self) -> PathBuf {
        self.path("state")
    }

    fn fake_command(&self, name: &str, body: &str) {
        let path = self.fake().join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// The lines a fake command recorded.
    fn calls(&self, name: &str) -> Vec<String> {
        match std::fs::read_to_string(self.path(&format!("{name}.calls"))) {
            Ok(text) => text.lines().map(str::to_owned).collect(),
            Err(_) => Vec::new(),
        }
    }

    /// The fakes first, then the system's commands.
    fn default_path(&self) -> String {
        format!("{}:/usr/local/bin:/usr/bin:/bin", self.fake().display())
    }

    /// `--prefix`, `--unit-dir`, `--state-dir` into this root.
    fn flags(&self) -> Vec<String> {
        vec![
            format!("--prefix={}", self.prefix().display()),
            format!("--unit-dir={}", self.units().display()),
            format!("--state-dir={}", self.state().display()),
        ]
    }

    /// Nothing was installed, written or enabled.
    fn assert_untouched(&self) {
        assert!(!self.prefix().exists(), "the prefix was created");
        assert!(!self.units().exists(), "the unit dir was created");
        assert!(!self.state().exists(), "the state dir was created");
        assert_eq!(self.calls("systemctl"), Vec::<String>::new());
    }
}

/// `/install.sh` as `curl -fsSL` gets it.
async fn fetch_script(api: &Api) -> String {
    let (status, script) = api.page("/install.sh").await.unwrap();
    assert_eq!(status, 200, "{script}");
    script
}

/// `sh -s -- ARGS` with `script` on stdin, as `curl … | sh -s -- ARGS`
/// runs it, with only PATH in the environment.
async fn run_script(script: &str, args: &[String], path: &str) -> Output {
    let mut child = Command::new("/bin/sh")
        .arg("-s")
        .arg("--")
        .args(args)
        .env_clear()
        .env("PATH", path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(script.as_bytes()).await.unwrap();
    drop(stdin);
    tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .expect("the installer did not finish")
        .unwrap()
}

fn describe(out: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    )
}

async fn server() -> TestServer {
    TestServer::start_with(|config| config.agent_binary = Some(PathBuf::from(BIN)))
        .await
        .unwrap()
}

fn same_file_contents(a: &Path, b: &Path) -> bool {
    std::fs::read(a).unwrap() == std::fs::read(b).unwrap()
}

/// The `ExecStart=` of the installed unit, split into words (the test's
/// paths hold no spaces or quotes).
fn exec_start(root: &Root) -> Vec<String> {
    let unit = std::fs::read_to_string(root.units().join(UNIT)).unwrap();
    unit.lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .unwrap_or_else(|| panic!("no ExecStart in\n{unit}"))
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn the_installer_enrols_and_starts_an_agent_and_run_again_upgrades_in_place() {
    let server = server().await;
    let admin = server.admin().await.unwrap();
    let created = admin
        .create_token_with_labels(&[("env", "test")])
        .await
        .unwrap();
    let root = Root::new();
    let mut args = root.flags();
    args.extend([
        format!("--token={}", created.token),
        String::from("--name"),
        String::from("web 07"),
        String::from("--labels"),
        String::from("role=web"),
    ]);
    let script = fetch_script(&server.anonymous()).await;

    let out = run_script(&script, &args, &root.default_path()).await;
    assert!(out.status.success(), "{}", describe(&out));
    // The token never shows in what the installer printed.
    assert!(
        !text(&out.stdout).contains(&created.token),
        "{}",
        describe(&out)
    );
    assert!(
        !text(&out.stderr).contains(&created.token),
        "{}",
        describe(&out)
    );

    // The binary is the one the server offers, byte for byte.
    assert!(same_file_contents(&root.installed(), Path::new(BIN)));
    let unit_path = root.units().join(UNIT);
    assert_eq!(
        root.calls("systemctl"),
        [
            String::from("daemon-reload"),
            format!("try-restart {UNIT}"),
            format!("enable --now {}", unit_path.display()),
        ]
    );
    let argv = exec_start(&root);
    assert_eq!(
        argv,
        [
            root.installed().display().to_string(),
            String::from("agent"),
            String::from("run"),
            format!("--state-dir={}", root.state().display()),
        ]
    );

    // Enrolled with the name given, the token's labels and those given.
    let hosts = admin.hosts().await.unwrap();
    assert_eq!(hosts.len(), 1, "{hosts:?}");
    let host = &hosts[0];
    assert_eq!(host.name, "web 07");
    assert_eq!(
        host.labels,
        BTreeMap::from([
            (String::from("env"), String::from("test")),
            (String::from("role"), String::from("web"))
        ])
    );

    // What systemd would start comes online.
    let agent = AgentProcess::spawn_command_line(&argv, &[]).unwrap();
    rm_testkit::wait_until(LIMIT, "the installed agent to come online", || {
        server.host_online(&host.id)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", agent.log()));

    // Again, without a token, over an older binary: upgraded in place,
    // the enrolment kept, no second host.
    let state_before = std::fs::read(root.state().join("agent.json")).unwrap();
    let older = root.path("older");
    std::fs::write(&older, b"#!/bin/sh\necho an older agent\n").unwrap();
    std::fs::rename(&older, root.installed()).unwrap();
    let out = run_script(&script, &root.flags(), &root.default_path()).await;
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        text(&out.stdout).contains("already enrolled"),
        "{}",
        describe(&out)
    );
    assert!(same_file_contents(&root.installed(), Path::new(BIN)));
    assert_eq!(
        std::fs::read(root.state().join("agent.json")).unwrap(),
        state_before
    );
    assert_eq!(admin.hosts().await.unwrap().len(), 1);
    assert_eq!(root.calls("systemctl").len(), 6);
    assert!(server.host_online(&host.id).await);
}

#[tokio::test]
async fn over_tls_the_installer_pins_the_servers_certificate() {
    let server =
        TestServer::start_tls_with(|config| config.agent_binary = Some(PathBuf::from(BIN)))
            .await
            .unwrap();
    let admin = server.admin().await.unwrap();
    let created = admin
        .create_enrollment_token(Some("tls-01"), None)
        .await
        .unwrap();
    let fingerprint = server.state.config().tls_fingerprint.unwrap().to_string();
    // The operator fetched the script trusting the certificate (curl
    // --cacert): the test client trusts it.
    let script = fetch_script(&server.anonymous()).await;
    assert!(script.contains(&format!("SERVER_FINGERPRINT='{fingerprint}'")));
    let root = Root::new();
    let mut args = root.flags();
    args.extend([String::from("--token"), created.token.clone()]);

    let out = run_script(&script, &args, &root.default_path()).await;
    assert!(out.status.success(), "{}", describe(&out));
    assert!(same_file_contents(&root.installed(), Path::new(BIN)));
    let state = std::fs::read_to_string(root.state().join("agent.json")).unwrap();
    assert!(state.contains(&fingerprint), "{state}");

    let agent = AgentProcess::spawn_command_line(&exec_start(&root), &[]).unwrap();
    let host = &admin.hosts().await.unwrap()[0];
    assert_eq!(host.name, "tls-01");
    rm_testkit::wait_until(LIMIT, "the installed agent to come online", || {
        server.host_online(&host.id)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", agent.log()));
}

/// A mirror serving `sums` as SHA256SUMS and `binary` as this platform's
/// agent, on 127.0.0.1; its base URL.
async fn mirror(sums: String, binary: Vec<u8>) -> String {
    let platform = rm_server::downloads::own_platform();
    let app = axum::Router::new()
        .route(
            "/agent/SHA256SUMS",
            axum::routing::get(move || async move { sums }),
        )
        .route(
            &format!("/agent/{platform}"),
            axum::routing::get(move || async move { binary }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/agent", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

#[tokio::test]
async fn a_checksum_mismatch_is_refused_and_installs_nothing() {
    let server = server().await;
    let admin = server.admin().await.unwrap();
    let created = admin.create_enrollment_token(None, None).await.unwrap();
    let script = fetch_script(&server.anonymous()).await;
    let platform = rm_server::downloads::own_platform();
    let real_sum = rm_server::downloads::sha256_of(Path::new(BIN)).unwrap();

    // A mirror whose binary is not the one its SHA256SUMS (and the
    // script) name.
    let tampered = mirror(
        format!("{real_sum}  {platform}\n"),
        b"#!/bin/sh\necho not the agent\n".to_vec(),
    )
    .await;
    // A mirror whose SHA256SUMS agrees with its binary but not with the
    // hashes the server put into the script.
    let other = b"#!/bin/sh\necho another binary\n".to_vec();
    let other_sum = {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), &other).unwrap();
        rm_server::downloads::sha256_of(file.path()).unwrap()
    };
    let consistent_but_foreign = mirror(format!("{other_sum}  {platform}\n"), other).await;

    for (mirror, says) in [
        (tampered, format!("SHA256SUMS says {real_sum}")),
        (
            consistent_but_foreign,
            format!("this script says {real_sum}"),
        ),
    ] {
        let root = Root::new();
        let mut args = root.flags();
        args.extend([
            format!("--token={}", created.token),
            format!("--download-url={mirror}"),
        ]);
        let out = run_script(&script, &args, &root.default_path()).await;
        assert!(!out.status.success(), "{}", describe(&out));
        let stderr = text(&out.stderr);
        assert!(stderr.contains("checksum mismatch"), "{}", describe(&out));
        assert!(stderr.contains(&says), "{}", describe(&out));
        assert!(
            stderr.contains("nothing was installed"),
            "{}",
            describe(&out)
        );
        root.assert_untouched();
    }
    // The token was not spent.
    assert!(admin.hosts().await.unwrap().is_empty());
}

/// A PATH of the commands the installer needs, without restic (nor any
/// package manager): the fakes first, then links to the system's tools.
fn path_without_restic(root: &Root) -> String {
    let tools = root.path("tools");
    std::fs::create_dir(&tools).unwrap();
    for tool in [
        "uname",
        "id",
        "mktemp",
        "rm",
        "curl",
        "cat",
        "awk",
        "cut",
        "sha256sum",
        "chmod",
        "mkdir",
        "cp",
        "mv",
        "env",
    ] {
        let found = ["/usr/bin", "/bin"]
            .iter()
            .map(|dir| Path::new(dir).join(tool))
            .find(|p| p.exists())
            .unwrap_or_else(|| panic!("{tool} is not installed"));
        std::os::unix::fs::symlink(found, tools.join(tool)).unwrap();
    }
    format!("{}:{}", root.fake().display(), tools.display())
}

#[tokio::test]
async fn missing_restic_is_installed_with_the_package_manager() {
    let server = server().await;
    let admin = server.admin().await.unwrap();
    let created = admin.create_enrollment_token(None, None).await.unwrap();
    let script = fetch_script(&server.anonymous()).await;
    let root = Root::new();
    // A fake apt-get: records its calls; `install` puts a restic on PATH.
    root.fake_command(
        "apt-get",
        &format!(
            "echo \"$*\" >> '{calls}'\n\
             if [ \"$1\" = install ]; then\n\
             printf '#!/bin/sh\\necho restic 0.16.4\\n' > '{restic}'\n\
             chmod 0755 '{restic}'\n\
             fi\n",
            calls = root.path("apt-get.calls").display(),
            restic = root.fake().join("restic").display()
        ),
    );
    let path = path_without_restic(&root);
    let mut args = root.flags();
    args.extend([
        format!("--token={}", created.token),
        String::from("--no-start"),
    ]);

    let out = run_script(&script, &args, &path).await;
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(root.calls("apt-get"), ["update -q", "install -y restic"]);
    assert!(same_file_contents(&root.installed(), Path::new(BIN)));
    // --no-start: the unit is written, systemd is not touched.
    assert!(root.units().join(UNIT).is_file());
    assert_eq!(root.calls("systemctl"), Vec::<String>::new());
    assert_eq!(admin.hosts().await.unwrap().len(), 1);
}

#[tokio::test]
async fn without_restic_or_a_package_manager_it_says_what_to_do() {
    let server = server().await;
    let script = fetch_script(&server.anonymous()).await;
    let root = Root::new();
    let path = path_without_restic(&root);
    let mut args = root.flags();
    args.push(String::from("--token=rme.unused.token"));
    let out = run_script(&script, &args, &path).await;
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(
        text(&out.stderr)
            .contains("install restic 0.14 or newer from https://restic.readthedocs.io"),
        "{}",
        describe(&out)
    );
    root.assert_untouched();
}

#[tokio::test]
async fn a_dry_run_downloads_and_checks_but_changes_nothing() {
    let server = server().await;
    let admin = server.admin().await.unwrap();
    let created = admin.create_enrollment_token(None, None).await.unwrap();
    let script = fetch_script(&server.anonymous()).await;
    let root = Root::new();
    let mut args = root.flags();
    args.extend([
        format!("--token={}", created.token),
        String::from("--labels=role=web"),
        String::from("--dry-run"),
    ]);
    let out = run_script(&script, &args, &root.default_path()).await;
    assert!(out.status.success(), "{}", describe(&out));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("checked: SHA-256"), "{stdout}");
    for step in [
        format!("would run: mv -f {0}.new {0}", root.installed().display()),
        format!(
            "would run: RM_TOKEN=<token> {} agent enroll --server={}",
            root.installed().display(),
            server.url
        ),
        String::from("--labels=role=web"),
        format!(
            "agent install-service --unit-dir={}",
            root.units().display()
        ),
        String::from("dry run: nothing was changed"),
    ] {
        assert!(stdout.contains(&step), "{step} not in\n{stdout}");
    }
    assert!(!stdout.contains(&created.token), "{stdout}");
    assert!(
        !stdout.contains(&format!("installed {}", root.installed().display())),
        "{stdout}"
    );
    root.assert_untouched();
    assert!(admin.hosts().await.unwrap().is_empty());
}

#[tokio::test]
async fn refusals_change_nothing_and_say_why() {
    let server = server().await;
    let script = fetch_script(&server.anonymous()).await;

    // No token and not enrolled.
    let root = Root::new();
    let out = run_script(&script, &root.flags(), &root.default_path()).await;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("--token is required: this host is not enrolled yet"),
        "{}",
        describe(&out)
    );
    root.assert_untouched();

    // An architecture there is no agent for.
    let root = Root::new();
    root.fake_command(
        "uname",
        "if [ \"$1\" = -m ]; then echo mips64; else echo Linux; fi\n",
    );
    let mut args = root.flags();
    args.push(String::from("--token=rme.a.b"));
    let out = run_script(&script, &args, &root.default_path()).await;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("architecture (mips64)"),
        "{}",
        describe(&out)
    );
    root.assert_untouched();

    // Flags: unknown, relative paths, a missing value.
    for (bad, says) in [
        (vec!["--frobnicate"], "unknown argument '--frobnicate'"),
        (
            vec!["--prefix=usr/local", "--token=x"],
            "--prefix must be an absolute path",
        ),
        (vec!["--token"], "--token needs a value"),
    ] {
        let root = Root::new();
        let args: Vec<String> = bad.iter().map(|s| s.to_string()).collect();
        let out = run_script(&script, &args, &root.default_path()).await;
        assert!(!out.status.success(), "{bad:?}");
        assert!(
            text(&out.stderr).contains(says),
            "{bad:?}: {}",
            describe(&out)
        );
        root.assert_untouched();
    }
}

#[tokio::test]
async fn the_served_script_passes_shellcheck() {
    let Some(shellcheck) = ["/usr/bin/shellcheck", "/usr/local/bin/shellcheck"]
        .into_iter()
        .find(|p| Path::new(p).exists())
    else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "shellcheck is missing in CI (scripts/test installs Debian's shellcheck)"
        );
        eprintln!("SKIPPED: shellcheck is not installed (apt-get install shellcheck)");
        return;
    };
    // Over TLS the script carries a fingerprint too: check that variant.
    let server =
        TestServer::start_tls_with(|config| config.agent_binary = Some(PathBuf::from(BIN)))
            .await
            .unwrap();
    let script = fetch_script(&server.anonymous()).await;
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &script).unwrap();
    let out = Command::new(shellcheck)
        .args(["-s", "sh"])
        .arg(file.path())
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
}

/// Runs a binary this process just wrote. A child another test forked in
/// the meantime may still hold the write handle until it execs (ETXTBSY):
/// that passes, so it is tried again.
async fn output_of_fresh_copy(bin: &Path, args: &[&str]) -> Output {
    const ETXTBSY: i32 = 26;
    let mut tries = 0;
    loop {
        match Command::new(bin).args(args).output().await {
            Err(e) if e.raw_os_error() == Some(ETXTBSY) && tries < 50 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            result => return result.unwrap(),
        }
    }
}

#[tokio::test]
async fn the_units_pass_systemd_analyze_verify() {
    let Some(analyze) = ["/usr/bin/systemd-analyze", "/bin/systemd-analyze"]
        .into_iter()
        .find(|p| Path::new(p).exists())
    else {
        eprintln!("SKIPPED: systemd-analyze is not installed");
        return;
    };
    let units = tempfile::tempdir().unwrap();
    let unit_dir = format!("--unit-dir={}", units.path().display());
    // A copy outside any home folder: a build under /root or /home is
    // refused by `server install-service` (its unit hides those).
    let bin = units.path().join("restic-manager");
    std::fs::copy(BIN, &bin).unwrap();
    for args in [
        vec!["agent", "install-service", &unit_dir, "--no-start"],
        vec![
            "server",
            "install-service",
            &unit_dir,
            "--no-start",
            "--listen=0.0.0.0:443",
            "--public-url=https://backup.example.net",
            "--tls-cert=/etc/restic-manager/cert.pem",
            "--tls-key=/etc/restic-manager/key.pem",
        ],
    ] {
        let out = output_of_fresh_copy(&bin, &args).await;
        assert!(out.status.success(), "{args:?}: {}", describe(&out));
    }
    let agent = units.path().join(UNIT);
    let server = units.path().join("restic-manager-server.service");
    let out = Command::new(analyze)
        .arg("verify")
        .arg(&agent)
        .arg(&server)
        .output()
        .await
        .unwrap();
    // verify reports problems on stderr and still exits 0 for most.
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{}",
        describe(&out)
    );
    // ExecStart runs this binary (the one install-service was run as).
    let agent = std::fs::read_to_string(&agent).unwrap();
    assert!(
        agent.contains(&format!("ExecStart={} agent run", bin.display())),
        "{agent}"
    );
}

#[tokio::test]
async fn version_and_completions() {
    let out = Command::new(BIN).arg("--version").output().await.unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(
        text(&out.stdout),
        format!("restic-manager {}\n", env!("CARGO_PKG_VERSION"))
    );
    for (shell, marker) in [
        ("bash", "complete -F _restic__manager"),
        ("zsh", "#compdef restic-manager"),
        ("fish", "complete -c restic-manager"),
    ] {
        let out = Command::new(BIN)
            .args(["completions", shell])
            .output()
            .await
            .unwrap();
        assert!(out.status.success(), "{shell}: {}", describe(&out));
        let script = text(&out.stdout);
        assert!(script.contains(marker), "{shell}: {script}");
        assert!(script.contains("install-service"), "{shell}");
    }
    let out = Command::new(BIN)
        .args(["completions", "tcsh"])
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("invalid value 'tcsh'"),
        "{}",
        describe(&out)
    );
}
