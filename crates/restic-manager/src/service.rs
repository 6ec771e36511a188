//! `agent install-service` and `server install-service`: the systemd units
//! (text made by pure functions, so tests and `systemd-analyze verify` see
//! exactly what is installed), written atomically, then enabled and started
//! with the `systemctl` found on `PATH`.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

use crate::cli::{AgentServiceArgs, ServerServiceArgs};

/// The agent's unit name.
pub(crate) const AGENT_UNIT: &str = "restic-manager-agent.service";
/// The server's unit name.
pub(crate) const SERVER_UNIT: &str = "restic-manager-server.service";

/// Where systemd itself looks for units: a unit written elsewhere is
/// enabled by its path (systemctl links it in).
const SYSTEMD_UNIT_DIRS: &[&str] = &[
    "/etc/systemd/system",
    "/run/systemd/system",
    "/usr/lib/systemd/system",
    "/lib/systemd/system",
];

/// The open-file limit of the server's unit: one per agent connection,
/// with room for the database and requests.
pub(crate) const SERVER_OPEN_FILES: u64 = 65_536;

/// What the agent's unit runs.
#[derive(Debug, Clone)]
pub(crate) struct AgentUnit<'a> {
    /// The `restic-manager` binary.
    pub exe: &'a Path,
    /// `--state-dir`.
    pub state_dir: &'a Path,
}

/// The agent's unit. It runs as root, reads everything it backs up and
/// writes restores anywhere the restore guard allows, so the hardening is
/// only what cannot get in the way of that: no `ProtectSystem`,
/// `ProtectHome`, `PrivateTmp` (a restore to /tmp must land in the real
/// /tmp), `RestrictSUIDSGID` (restores keep setuid bits) or
/// `ProtectKernelModules` (it hides /usr/lib/modules from backups).
pub(crate) fn agent_unit(unit: &AgentUnit<'_>) -> anyhow::Result<String> {
    let exe = absolute_path("the binary", unit.exe)?;
    let state_dir = absolute_path("--state-dir", unit.state_dir)?;
    let exec = [
        exec_arg("the binary", &path_text(&exe)?)?,
        String::from("agent"),
        String::from("run"),
        exec_arg(
            "--state-dir",
            &format!("--state-dir={}", path_text(&state_dir)?),
        )?,
    ]
    .join(" ");
    Ok(format!(
        "\
# Written by `restic-manager agent install-service`; see docs/install.md.
[Unit]
Description=restic-manager agent (backups with restic)
Documentation=man:restic(1)
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
ExecStart={exec}
# RM_* settings of `agent run` (RM_HOOK_TIMEOUT, RM_RESTIC_BIN, ...).
EnvironmentFile=-/etc/restic-manager/agent.env
Restart=on-failure
RestartSec=5s
# SIGTERM to the agent alone: it stops restic itself and says so.
KillMode=mixed
TimeoutStopSec=90s
NoNewPrivileges=yes
ProtectKernelTunables=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
LockPersonality=yes
RestrictRealtime=yes
SystemCallArchitectures=native

[Install]
WantedBy=multi-user.target
"
    ))
}

/// What the server's unit runs.
#[derive(Debug, Clone)]
pub(crate) struct ServerUnit<'a> {
    /// The `restic-manager` binary.
    pub exe: &'a Path,
    /// `--data-dir`: under /var/lib, kept by systemd as the unit's
    /// `StateDirectory`.
    pub data_dir: &'a Path,
    /// `--listen`.
    pub listen: SocketAddr,
    /// `--public-url`.
    pub public_url: Option<&'a str>,
    /// `--agent-binaries`.
    pub agent_binaries: Option<&'a Path>,
    /// `--tls-cert` and `--tls-key`, handed over as credentials (the
    /// service's own user cannot read root's key file).
    pub tls: Option<(&'a Path, &'a Path)>,
}

/// Folders `ProtectHome=yes` hides from the server.
const HIDDEN_HOMES: &[&str] = &["/home", "/root", "/run/user"];

/// Refuses a path the server's sandbox would hide, naming `field`.
fn visible_to_server(field: &str, path: &Path) -> anyhow::Result<()> {
    if let Some(home) = HIDDEN_HOMES.iter().find(|home| path.starts_with(home)) {
        bail!(
            "{field} {} is under {home}, which the server's unit hides (ProtectHome=yes); \
             put it elsewhere (the binary in /usr/local/bin, say) and run this again",
            path.display()
        );
    }
    Ok(())
}

/// The server's unit: its own dynamic user, a read-only system but for its
/// data dir, no capabilities (but binding a port below 1024 when asked).
pub(crate) fn server_unit(unit: &ServerUnit<'_>) -> anyhow::Result<String> {
    let exe = absolute_path("the binary", unit.exe)?;
    visible_to_server("the binary", &exe)?;
    let data_dir = absolute_path("--data-dir", unit.data_dir)?;
    let state_directory = data_dir
        .strip_prefix("/var/lib")
        .ok()
        .filter(|rest| !rest.as_os_str().is_empty())
        .with_context(|| {
            format!(
                "--data-dir {} must be under /var/lib: systemd keeps it (StateDirectory=) owned by the server's own user",
                data_dir.display()
            )
        })?;
    let state_directory = path_text(state_directory)?;
    let mut exec = vec![
        exec_arg("the binary", &path_text(&exe)?)?,
        String::from("server"),
        exec_arg("--listen", &format!("--listen={}", unit.listen))?,
        exec_arg(
            "--data-dir",
            &format!("--data-dir={}", path_text(&data_dir)?),
        )?,
    ];
    if let Some(url) = unit.public_url {
        exec.push(exec_arg("--public-url", &format!("--public-url={url}"))?);
    }
    let mut credentials = String::new();
    if let Some(dir) = unit.agent_binaries {
        let dir = absolute_path("--agent-binaries", dir)?;
        visible_to_server("--agent-binaries", &dir)?;
        exec.push(exec_arg(
            "--agent-binaries",
            &format!("--agent-binaries={}", path_text(&dir)?),
        )?);
    }
    if let Some((cert, key)) = unit.tls {
        for (id, field, path) in [
            ("tls-cert", "--tls-cert", cert),
            ("tls-key", "--tls-key", key),
        ] {
            let path = absolute_path(field, path)?;
            let _ = writeln!(
                credentials,
                "LoadCredential={id}:{}",
                specifiers_escaped(field, &path_text(&path)?)?
            );
            // Left for systemd to expand: where it put the credential.
            exec.push(format!("{field}=${{CREDENTIALS_DIRECTORY}}/{id}"));
        }
    }
    let exec = exec.join(" ");
    let capabilities = if unit.listen.port() < 1024 {
        "CapabilityBoundingSet=CAP_NET_BIND_SERVICE\nAmbientCapabilities=CAP_NET_BIND_SERVICE\n"
    } else {
        "CapabilityBoundingSet=\n"
    };
    Ok(format!(
        "\
# Written by `restic-manager server install-service`; see docs/install.md.
[Unit]
Description=restic-manager server
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
ExecStart={exec}
# Other RM_* settings of `server` (RM_METRICS_TOKEN_FILE, ...); the first
# admin password is printed to the journal unless RM_ADMIN_PASSWORD is set.
EnvironmentFile=-/etc/restic-manager/server.env
{credentials}DynamicUser=yes
StateDirectory={state_directory}
StateDirectoryMode=0700
UMask=0077
Restart=on-failure
RestartSec=5s
LimitNOFILE={SERVER_OPEN_FILES}
{capabilities}NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
ProtectProc=invisible
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
MemoryDenyWriteExecute=yes
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallErrorNumber=EPERM

[Install]
WantedBy=multi-user.target
"
    ))
}

/// `restic-manager agent install-service`.
pub(crate) fn install_agent(args: &AgentServiceArgs) -> anyhow::Result<()> {
    let exe = own_executable()?;
    let text = agent_unit(&AgentUnit {
        exe: &exe,
        state_dir: &args.state_dir,
    })?;
    let enrolled = args.state_dir.join(rm_agent::state::AGENT_FILE).is_file();
    if !enrolled && !args.no_start {
        bail!(
            "this host is not enrolled yet ({} does not exist), so the service would fail; \
             run `restic-manager agent enroll` first, or write the unit only with --no-start",
            args.state_dir.join(rm_agent::state::AGENT_FILE).display()
        );
    }
    install(&args.unit_dir, AGENT_UNIT, &text, args.no_start)
}

/// `restic-manager server install-service`.
pub(crate) fn install_server(args: &ServerServiceArgs) -> anyhow::Result<()> {
    let exe = own_executable()?;
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some((cert.as_path(), key.as_path())),
        (None, None) => None,
        _ => bail!("--tls-cert and --tls-key must be given together"),
    };
    let text = server_unit(&ServerUnit {
        exe: &exe,
        data_dir: &args.data_dir,
        listen: args.listen,
        public_url: args.public_url.as_deref(),
        agent_binaries: args.agent_binaries.as_deref(),
        tls,
    })?;
    install(&args.unit_dir, SERVER_UNIT, &text, args.no_start)
}

/// This binary, as the unit will run it.
fn own_executable() -> anyhow::Result<PathBuf> {
    std::env::current_exe().context("could not find this program's own path for ExecStart=")
}

/// Writes `<unit_dir>/<name>` (a temporary file and a rename, mode 0644),
/// then reloads systemd, restarts the unit if it runs (a new binary or new
/// flags take effect) and enables and starts it, unless `no_start`.
fn install(unit_dir: &Path, name: &str, text: &str, no_start: bool) -> anyhow::Result<()> {
    let unit_dir = absolute_path("--unit-dir", unit_dir)?;
    std::fs::create_dir_all(&unit_dir)
        .with_context(|| format!("could not create --unit-dir {}", unit_dir.display()))?;
    let path = unit_dir.join(name);
    let temporary = unit_dir.join(format!(".{name}.new"));
    std::fs::write(&temporary, text)
        .with_context(|| format!("could not write {}", temporary.display()))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&temporary, std::fs::Permissions::from_mode(0o644))
            .with_context(|| format!("could not set the mode of {}", temporary.display()))?;
    }
    std::fs::rename(&temporary, &path)
        .with_context(|| format!("could not write {}", path.display()))?;
    println!("Wrote {}.", path.display());
    if no_start {
        println!("Not started (--no-start). Start it with: systemctl enable --now {name}");
        return Ok(());
    }
    let in_systemd_dir = SYSTEMD_UNIT_DIRS
        .iter()
        .any(|dir| unit_dir == Path::new(dir));
    let enable_target = if in_systemd_dir {
        name.to_owned()
    } else {
        path_text(&path)?
    };
    systemctl(&["daemon-reload"])?;
    systemctl(&["try-restart", name])?;
    systemctl(&["enable", "--now", &enable_target])?;
    println!("Enabled and started {name} (journalctl -u {name}).");
    Ok(())
}

/// Runs `systemctl ARGS` (the one on `PATH`), failing with its output.
fn systemctl(args: &[&str]) -> anyhow::Result<()> {
    let output = Command::new("systemctl")
        .args(args)
        .output()
        .with_context(|| format!("could not run systemctl {}", args.join(" ")))?;
    if !output.status.success() {
        bail!(
            "systemctl {} failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// `path` made absolute against the current directory, without `..`.
fn absolute_path(field: &str, path: &Path) -> anyhow::Result<PathBuf> {
    if path.components().any(|c| c == Component::ParentDir) {
        bail!("{field} {} must not contain `..`", path.display());
    }
    std::path::absolute(path).with_context(|| format!("{field} {}", path.display()))
}

fn path_text(path: &Path) -> anyhow::Result<String> {
    path.to_str()
        .map(str::to_owned)
        .with_context(|| format!("{} is not valid UTF-8", path.display()))
}

/// `value` with systemd's `%` specifiers escaped; control characters
/// (a newline would start a new setting) refused, naming `field`.
fn specifiers_escaped(field: &str, value: &str) -> anyhow::Result<String> {
    if value.chars().any(char::is_control) {
        bail!("{field} must not contain control characters");
    }
    Ok(value.replace('%', "%%"))
}

/// One word of an `ExecStart=` line: `%` and `$` escaped so systemd takes
/// them literally, double-quoted when it holds a space, a quote, a
/// backslash or a `;`.
fn exec_arg(field: &str, value: &str) -> anyhow::Result<String> {
    let escaped = specifiers_escaped(field, value)?.replace('$', "$$");
    if escaped.is_empty() || escaped.contains([' ', '"', '\'', '\\', ';']) {
        Ok(format!(
            "\"{}\"",
            escaped.replace('\\', r"\\").replace('"', "\\\"")
        ))
    } else {
        Ok(escaped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line<'a>(text: &'a str, key: &str) -> &'a str {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap_or_else(|| panic!("no {key} in\n{text}"))
    }

    #[test]
    fn the_agent_unit_runs_the_agent_with_its_state_dir() {
        let text = agent_unit(&AgentUnit {
            exe: Path::new("/usr/local/bin/restic-manager"),
            state_dir: Path::new("/var/lib/restic-manager/agent"),
        })
        .unwrap();
        assert_eq!(
            line(&text, "ExecStart="),
            "/usr/local/bin/restic-manager agent run --state-dir=/var/lib/restic-manager/agent"
        );
        assert_eq!(line(&text, "Restart="), "on-failure");
        // What would stop it backing up or restoring is absent.
        for absent in [
            "ProtectSystem",
            "ProtectHome",
            "PrivateTmp",
            "RestrictSUIDSGID",
            "User=",
        ] {
            assert!(!text.contains(absent), "{absent} in\n{text}");
        }
    }

    #[test]
    fn exec_words_are_quoted_and_escaped_for_systemd() {
        assert_eq!(exec_arg("f", "/a/b").unwrap(), "/a/b");
        assert_eq!(exec_arg("f", "/a b").unwrap(), "\"/a b\"");
        assert_eq!(exec_arg("f", "100%$HOME").unwrap(), "100%%$$HOME");
        assert_eq!(exec_arg("f", r#"a"b\c"#).unwrap(), r#""a\"b\\c""#);
        assert_eq!(exec_arg("f", ";").unwrap(), "\";\"");
        let err = exec_arg("--state-dir", "/a\nExecStartPre=/bin/sh").unwrap_err();
        assert!(err.to_string().starts_with("--state-dir "), "{err}");
        let text = agent_unit(&AgentUnit {
            exe: Path::new("/opt/rm 1/restic-manager"),
            state_dir: Path::new("/srv/state 100%"),
        })
        .unwrap();
        assert_eq!(
            line(&text, "ExecStart="),
            "\"/opt/rm 1/restic-manager\" agent run \"--state-dir=/srv/state 100%%\""
        );
    }

    #[test]
    fn relative_paths_become_absolute_and_dot_dot_is_refused() {
        let err = agent_unit(&AgentUnit {
            exe: Path::new("/usr/local/bin/restic-manager"),
            state_dir: Path::new("/var/lib/../etc"),
        })
        .unwrap_err();
        assert!(err.to_string().starts_with("--state-dir"), "{err}");
    }

    fn server(listen: &str, data_dir: &str) -> anyhow::Result<String> {
        server_unit(&ServerUnit {
            exe: Path::new("/usr/local/bin/restic-manager"),
            data_dir: Path::new(data_dir),
            listen: listen.parse().unwrap(),
            public_url: Some("https://backup.example.net"),
            agent_binaries: None,
            tls: Some((Path::new("/etc/rm/cert.pem"), Path::new("/etc/rm/key.pem"))),
        })
    }

    #[test]
    fn the_server_unit_keeps_its_data_dir_and_nothing_else_writable() {
        let text = server("0.0.0.0:8443", "/var/lib/restic-manager/server").unwrap();
        assert_eq!(
            line(&text, "ExecStart="),
            "/usr/local/bin/restic-manager server --listen=0.0.0.0:8443 \
             --data-dir=/var/lib/restic-manager/server --public-url=https://backup.example.net \
             --tls-cert=${CREDENTIALS_DIRECTORY}/tls-cert --tls-key=${CREDENTIALS_DIRECTORY}/tls-key"
        );
        assert_eq!(line(&text, "StateDirectory="), "restic-manager/server");
        assert_eq!(line(&text, "DynamicUser="), "yes");
        assert_eq!(line(&text, "ProtectSystem="), "strict");
        assert_eq!(line(&text, "LimitNOFILE="), "65536");
        assert_eq!(line(&text, "CapabilityBoundingSet="), "");
        assert!(text.contains("LoadCredential=tls-key:/etc/rm/key.pem\n"));
        let low = server("0.0.0.0:443", "/var/lib/rm").unwrap();
        assert_eq!(line(&low, "AmbientCapabilities="), "CAP_NET_BIND_SERVICE");
    }

    #[test]
    fn what_the_servers_sandbox_would_hide_is_refused() {
        let unit = |exe: &'static str, binaries: Option<&'static str>| ServerUnit {
            exe: Path::new(exe),
            data_dir: Path::new("/var/lib/rm"),
            listen: "0.0.0.0:8080".parse().unwrap(),
            public_url: None,
            agent_binaries: binaries.map(Path::new),
            tls: None,
        };
        let err = server_unit(&unit("/root/.cargo/bin/restic-manager", None)).unwrap_err();
        assert!(
            err.to_string().starts_with("the binary /root/.cargo/bin"),
            "{err}"
        );
        let err =
            server_unit(&unit("/usr/bin/restic-manager", Some("/home/me/agents"))).unwrap_err();
        assert!(
            err.to_string().starts_with("--agent-binaries /home/me"),
            "{err}"
        );
        assert!(server_unit(&unit("/usr/bin/restic-manager", Some("/srv/agents"))).is_ok());
    }

    #[test]
    fn a_server_data_dir_outside_var_lib_is_refused_naming_the_flag() {
        for bad in ["/srv/rm", "/var/lib", "/var/library/x"] {
            let err = server("0.0.0.0:8080", bad).unwrap_err();
            assert!(err.to_string().starts_with("--data-dir "), "{bad}: {err}");
        }
    }
}
