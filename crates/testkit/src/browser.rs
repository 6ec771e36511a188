//! A real browser for UI tests: Debian's headless Chromium, driven over
//! WebDriver by Debian's chromedriver.
//!
//! [`Browser::start`] runs `chromedriver --port=0` (it picks a free port on
//! the loopback interface and prints it), then opens a WebDriver session that
//! launches `chromium` headless with a fresh profile in a temporary
//! directory. Nothing is downloaded: both programs come from Debian's
//! `chromium` and `chromium-driver` packages, which `scripts/test` installs
//! when they are missing. A test that needs the browser fails with a message
//! that says so when they are not installed; it never skips silently.
//!
//! The helpers cover what UI tests do most: navigate, wait for an element or
//! a text, fill inputs, click, take screenshots (PNG files a person can look
//! at), read the browser console's errors and list every URL the page loaded,
//! so that a test can assert the UI fetches nothing from another host. For
//! anything else, [`Browser::client`] gives the underlying
//! [`fantoccini::Client`].
//!
//! Call [`Browser::close`] at the end of a test: it ends the WebDriver
//! session, which quits Chromium, and then stops chromedriver. chromedriver
//! runs in a process group of its own, which Chromium joins, so dropping a
//! `Browser` without closing it (a failed assertion, say) still kills both
//! with `SIGKILL` to that group, and no browser outlives its test.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use fantoccini::elements::Element;
use fantoccini::wd::{Capabilities, WebDriverCompatibleCommand};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};

/// How to get the browser, for error messages.
const INSTALL_HINT: &str = "UI tests need Debian's headless Chromium and its WebDriver: \
     run scripts/test (it installs them when missing), or `apt-get install chromium chromium-driver`";

/// How long chromedriver may take to report its port.
const DRIVER_START_LIMIT: Duration = Duration::from_secs(20);

/// How often the `wait_for*` helpers look again.
const POLL_EVERY: Duration = Duration::from_millis(50);

/// At most this many lines of chromedriver's output are kept for error
/// messages.
const KEPT_OUTPUT_LINES: usize = 50;

/// The Chromium flags of every session, besides `--user-data-dir`.
const CHROMIUM_ARGS: &[&str] = &[
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
    "--window-size=1280,900",
];

/// A headless Debian Chromium driven over WebDriver (chromedriver on
/// 127.0.0.1, a free port), for UI tests.
///
/// See the [module documentation](self) for what it runs and how to end it.
pub struct Browser {
    client: Client,
    /// chromedriver and, in its process group, Chromium.
    driver: DriverGroup,
    /// Chromium's profile; removed when the browser is dropped.
    user_data_dir: TempDir,
    /// Where Chromium saves what a page downloads (no prompt).
    downloads: TempDir,
    shots_dir: PathBuf,
    /// Every SEVERE console entry read so far (reading chromedriver's log
    /// empties it, so entries are kept here).
    console_errors: Mutex<Vec<String>>,
}

impl std::fmt::Debug for Browser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Browser")
            .field("driver_pid", &self.driver.child.id())
            .field("user_data_dir", &self.user_data_dir.path())
            .field("shots_dir", &self.shots_dir)
            .finish_non_exhaustive()
    }
}

impl Browser {
    /// Starts chromedriver and a new headless session.
    ///
    /// Chromium (`command -v chromium`, passed as `goog:chromeOptions.binary`)
    /// runs with `--headless=new --no-sandbox --disable-gpu
    /// --disable-dev-shm-usage --disable-background-networking
    /// --disable-component-update --disable-sync --disable-quic
    /// --no-first-run --window-size=1280,900` and a fresh `--user-data-dir`.
    /// Browser console logging is switched on (`goog:loggingPrefs`) for
    /// [`Browser::console_errors`].
    ///
    /// Fails, naming how to install them (`scripts/test`, or `apt-get install
    /// chromium chromium-driver`), when `chromium` or `chromedriver` is not on
    /// `PATH`.
    pub async fn start() -> anyhow::Result<Browser> {
        let chromium = find_on_path("chromium")
            .ok_or_else(|| anyhow!("`chromium` is not on PATH. {INSTALL_HINT}"))?;
        let chromedriver = find_on_path("chromedriver")
            .ok_or_else(|| anyhow!("`chromedriver` is not on PATH. {INSTALL_HINT}"))?;

        let user_data_dir = tempfile::Builder::new()
            .prefix("rm-chromium-")
            .tempdir()
            .context("creating Chromium's profile directory")?;

        let downloads = tempfile::Builder::new()
            .prefix("rm-chromium-downloads-")
            .tempdir()
            .context("creating Chromium's download directory")?;

        let (mut driver, port, output) = start_driver(&chromedriver).await?;

        let mut args: Vec<String> = CHROMIUM_ARGS.iter().map(|a| a.to_string()).collect();
        args.push(format!(
            "--user-data-dir={}",
            user_data_dir.path().display()
        ));
        let capabilities = json!({
            "browserName": "chrome",
            "pageLoadStrategy": "normal",
            "timeouts": { "pageLoad": 30_000, "script": 10_000 },
            "goog:chromeOptions": {
                "binary": chromium.display().to_string(),
                "args": args,
                "prefs": {
                    "download.default_directory": downloads.path().display().to_string(),
                    "download.prompt_for_download": false,
                    "download.directory_upgrade": true,
                },
            },
            "goog:loggingPrefs": { "browser": "ALL" },
        });
        let Value::Object(capabilities) = capabilities else {
            bail!("capabilities are not a JSON object");
        };
        let capabilities: Capabilities = capabilities;

        // chromedriver speaks plain HTTP on the loopback interface: no TLS.
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let session = ClientBuilder::new(connector)
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await;
        let client = match session {
            Ok(client) => client,
            Err(e) => {
                driver.stop().await;
                bail!(
                    "could not start a Chromium session through chromedriver (chromium: {}): {e}\n\
                     chromedriver said:\n{}",
                    chromium.display(),
                    output_tail(&output)
                );
            }
        };

        Ok(Browser {
            client,
            driver,
            user_data_dir,
            downloads,
            shots_dir: screenshots_dir(),
            console_errors: Mutex::new(Vec::new()),
        })
    }

    /// Waits until Chromium has saved a download named `name` (no
    /// `.crdownload` left of it) and returns its bytes.
    pub async fn downloaded(&self, name: &str, within: Duration) -> anyhow::Result<Vec<u8>> {
        let path = self.downloads.path().join(name);
        let partial = self.downloads.path().join(format!("{name}.crdownload"));
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if path.exists() && !partial.exists() {
                return std::fs::read(&path).with_context(|| format!("reading {}", path.display()));
            }
            if tokio::time::Instant::now() >= deadline {
                let saved: Vec<String> = std::fs::read_dir(self.downloads.path())
                    .map(|entries| {
                        entries
                            .filter_map(Result::ok)
                            .map(|e| e.file_name().to_string_lossy().into_owned())
                            .collect()
                    })
                    .unwrap_or_default();
                bail!("Chromium did not save the download `{name}` within {within:?} (saved: {saved:?})");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The underlying WebDriver client, for what the helpers don't cover.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Navigates to `url` and waits until the page has loaded.
    pub async fn goto(&self, url: &str) -> anyhow::Result<()> {
        self.client
            .goto(url)
            .await
            .with_context(|| format!("navigating to {url}"))
    }

    /// Waits (polling, up to `limit`) for a CSS selector and returns the
    /// element.
    pub async fn wait_for(&self, css: &str, limit: Duration) -> anyhow::Result<Element> {
        self.client
            .wait()
            .at_most(limit)
            .every(POLL_EVERY)
            .for_element(Locator::Css(css))
            .await
            .with_context(|| format!("waiting up to {limit:?} for an element matching `{css}`"))
    }

    /// Waits (polling, up to `limit`) until the element matching `css` has
    /// text containing `needle`.
    ///
    /// The element is looked up anew on every try, so it may appear or be
    /// replaced while waiting. On time-out the error shows the last text
    /// seen.
    pub async fn wait_for_text(
        &self,
        css: &str,
        needle: &str,
        limit: Duration,
    ) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + limit;
        let mut last_seen: Option<String> = None;
        loop {
            if let Ok(element) = self.client.find(Locator::Css(css)).await {
                if let Ok(text) = element.text().await {
                    if text.contains(needle) {
                        return Ok(());
                    }
                    last_seen = Some(text);
                }
            }
            if tokio::time::Instant::now() >= deadline {
                let seen = match last_seen {
                    Some(text) => format!("its text was {text:?}"),
                    None => "no element matched".to_string(),
                };
                bail!(
                    "timed out after {limit:?} waiting for `{css}` to contain {needle:?}: {seen}"
                );
            }
            tokio::time::sleep(POLL_EVERY).await;
        }
    }

    /// The rendered text of the element `css` (waiting up to `limit` for
    /// it), read in one script call: a page that swaps a live region (the
    /// dashboard, when the fleet changes) would make an element found first
    /// stale before its text is read.
    pub async fn text(&self, css: &str, limit: Duration) -> anyhow::Result<String> {
        self.wait_for(css, limit).await?;
        let text = self
            .client
            .execute(
                "return document.querySelector(arguments[0])?.innerText ?? null;",
                vec![serde_json::json!(css)],
            )
            .await?;
        Ok(text.as_str().unwrap_or_default().trim().to_owned())
    }

    /// How many rows the tables matched by `css` have in their bodies.
    pub async fn table_rows(&self, css: &str) -> anyhow::Result<u64> {
        let count = self
            .client
            .execute(
                "return document.querySelectorAll(arguments[0] + ' tbody tr').length;",
                vec![serde_json::json!(css)],
            )
            .await?;
        count
            .as_u64()
            .with_context(|| format!("counting the rows of `{css}` gave {count}"))
    }

    /// Fills an input (by css) with text, replacing what was there.
    ///
    /// The element must be on the page already (see [`Browser::wait_for`]).
    pub async fn fill(&self, css: &str, text: &str) -> anyhow::Result<()> {
        let element = self.find(css).await?;
        element
            .clear()
            .await
            .with_context(|| format!("clearing `{css}`"))?;
        element
            .send_keys(text)
            .await
            .with_context(|| format!("typing into `{css}`"))
    }

    /// Clicks the element matching `css`.
    ///
    /// The element must be on the page already (see [`Browser::wait_for`]).
    pub async fn click(&self, css: &str) -> anyhow::Result<()> {
        self.find(css)
            .await?
            .click()
            .await
            .with_context(|| format!("clicking `{css}`"))
    }

    /// Logs in on `origin`'s login page as `username` and waits for the
    /// page behind it (its main navigation).
    pub async fn log_in(&self, origin: &str, username: &str, password: &str) -> anyhow::Result<()> {
        self.goto(&format!("{origin}/login")).await?;
        self.wait_for("#username", Duration::from_secs(10)).await?;
        self.fill("#username", username).await?;
        self.fill("#password", password).await?;
        self.click("#login-submit").await?;
        self.wait_for("nav", Duration::from_secs(10)).await?;
        Ok(())
    }

    /// Makes the current page answer every `confirm()` with OK, keeping
    /// the questions for [`Browser::confirmations`]. Lasts until the next
    /// navigation.
    pub async fn accept_confirms(&self) -> anyhow::Result<()> {
        self.client
            .execute(
                "window.rmConfirmed = []; \
                 window.confirm = (message) => { window.rmConfirmed.push(String(message)); return true; };",
                Vec::new(),
            )
            .await
            .context("replacing window.confirm")?;
        Ok(())
    }

    /// The questions `confirm()` asked since [`Browser::accept_confirms`].
    pub async fn confirmations(&self) -> anyhow::Result<Vec<String>> {
        let asked = self
            .client
            .execute("return window.rmConfirmed || [];", Vec::new())
            .await
            .context("reading the confirmations")?;
        Ok(serde_json::from_value(asked)?)
    }

    /// Saves a PNG screenshot of the viewport as `<shots_dir>/<name>.png` and
    /// returns its path.
    ///
    /// `shots_dir` is `$RM_UI_SCREENSHOTS` when set, else
    /// `<workspace>/target/ui-screenshots`; it is created when missing.
    /// Characters of `name` other than ASCII letters, digits, `-`, `_` and
    /// `.` become `_`, so a name can never leave that directory.
    pub async fn screenshot(&self, name: &str) -> anyhow::Result<PathBuf> {
        let png = self
            .client
            .screenshot()
            .await
            .with_context(|| format!("taking screenshot {name:?}"))?;
        tokio::fs::create_dir_all(&self.shots_dir)
            .await
            .with_context(|| format!("creating {}", self.shots_dir.display()))?;
        let path = self.shots_dir.join(format!("{}.png", file_stem(name)));
        tokio::fs::write(&path, png)
            .await
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }

    /// Browser console messages at level SEVERE (errors: `console.error`,
    /// uncaught exceptions, failed resource loads) since the browser started,
    /// across every page visited, oldest first.
    ///
    /// Captured through chromedriver's log endpoint: the session is started
    /// with the `goog:loggingPrefs: {browser: "ALL"}` capability, and this
    /// reads `POST /session/{id}/se/log {"type": "browser"}` (a custom
    /// WebDriver command, fantoccini doesn't wrap it). That sees errors from
    /// the very start of each page load, before any page script runs, which
    /// an injected `window.onerror` hook could not. Chromedriver hands each
    /// entry out once, so entries are kept here and every call returns all of
    /// them. Each message is chromedriver's text, such as
    /// `http://127.0.0.1:4000/ 12:16 "boom"` or `http://127.0.0.1:4000/ 0:58
    /// Uncaught Error: oops`.
    ///
    /// A failed load counts too: Chromium asks for `/favicon.ico` unless the
    /// page names an icon, and a 404 there shows up as `…/favicon.ico -
    /// Failed to load resource: the server responded with a status of 404`.
    pub async fn console_errors(&self) -> anyhow::Result<Vec<String>> {
        let entries = self
            .client
            .issue_cmd(BrowserLog)
            .await
            .context("reading the browser console log from chromedriver (POST se/log)")?;
        let Value::Array(entries) = entries else {
            bail!("chromedriver's browser log is not a list: {entries}");
        };
        let mut errors = self
            .console_errors
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for entry in entries {
            if entry.get("level").and_then(Value::as_str) == Some("SEVERE") {
                let message = match entry.get("message").and_then(Value::as_str) {
                    Some(message) => message.to_string(),
                    None => entry.to_string(),
                };
                errors.push(message);
            }
        }
        Ok(errors.clone())
    }

    /// Every URL the current page loaded so far: the document's own URL
    /// first, then each resource in the order it was fetched (from
    /// `performance.getEntriesByType('resource')`: scripts, styles, images,
    /// fonts, `fetch` and XHR calls). Tests assert that none points to
    /// another host.
    pub async fn requested_urls(&self) -> anyhow::Result<Vec<String>> {
        let urls = self
            .client
            .execute(
                "return [document.URL].concat(\
                     performance.getEntriesByType('resource').map(e => e.name));",
                Vec::new(),
            )
            .await
            .context("listing the page's requested URLs")?;
        let Value::Array(urls) = urls else {
            bail!("the page's requested URLs are not a list: {urls}");
        };
        urls.into_iter()
            .map(|url| match url {
                Value::String(url) => Ok(url),
                other => Err(anyhow!("a requested URL is not a string: {other}")),
            })
            .collect()
    }

    /// Ends the WebDriver session (which quits Chromium), stops chromedriver
    /// and removes Chromium's profile directory.
    pub async fn close(self) -> anyhow::Result<()> {
        let Browser {
            client,
            mut driver,
            user_data_dir,
            ..
        } = self;
        let closed = client.close().await;
        // Whatever the session's end left running goes too.
        driver.stop().await;
        let removed = user_data_dir.close();
        closed.context("ending the WebDriver session")?;
        removed.context("removing Chromium's profile directory")?;
        Ok(())
    }

    async fn find(&self, css: &str) -> anyhow::Result<Element> {
        self.client
            .find(Locator::Css(css))
            .await
            .with_context(|| format!("finding an element matching `{css}`"))
    }
}

/// chromedriver's log endpoint for the browser console, which the W3C
/// WebDriver protocol (and so fantoccini) lacks.
#[derive(Debug)]
struct BrowserLog;

impl WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!(
            "session/{}/se/log",
            session_id.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _request_url: &url::Url) -> (http::Method, Option<String>) {
        (
            http::Method::POST,
            Some(json!({ "type": "browser" }).to_string()),
        )
    }
}

/// chromedriver, started as the leader of a new process group that the
/// Chromium it launches joins. Dropping it kills the whole group.
struct DriverGroup {
    child: Child,
    /// The group's id (chromedriver's pid), `None` once stopped.
    pgid: Option<i32>,
}

impl DriverGroup {
    /// Kills every process of the group and waits for chromedriver to end.
    async fn stop(&mut self) {
        self.kill_group();
        let _ = self.child.kill().await;
    }

    fn kill_group(&mut self) {
        if let Some(pgid) = self.pgid.take() {
            use nix::sys::signal::{killpg, Signal};
            use nix::unistd::Pid;
            // ESRCH (the group is gone already) is fine.
            let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
        }
    }
}

impl Drop for DriverGroup {
    fn drop(&mut self) {
        self.kill_group();
    }
}

/// chromedriver's output lines, the last [`KEPT_OUTPUT_LINES`] of them.
type Output = Arc<Mutex<Vec<String>>>;

/// Runs chromedriver on a port of its choosing (loopback only, its default)
/// and returns it with that port once it listens.
async fn start_driver(chromedriver: &Path) -> anyhow::Result<(DriverGroup, u16, Output)> {
    let child = Command::new(chromedriver)
        .arg("--port=0")
        .arg("--log-level=WARNING")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("running {}. {INSTALL_HINT}", chromedriver.display()))?;
    let pgid = child.id().and_then(|pid| i32::try_from(pid).ok());
    let mut driver = DriverGroup { child, pgid };

    let output: Output = Arc::new(Mutex::new(Vec::new()));
    let (port_tx, mut port_rx) = tokio::sync::mpsc::channel::<u16>(1);
    if let Some(stdout) = driver.child.stdout.take() {
        tokio::spawn(keep_output(stdout, output.clone(), Some(port_tx)));
    }
    if let Some(stderr) = driver.child.stderr.take() {
        tokio::spawn(keep_output(stderr, output.clone(), None));
    }

    let port = tokio::time::timeout(DRIVER_START_LIMIT, port_rx.recv()).await;
    match port {
        Ok(Some(port)) => Ok((driver, port, output)),
        Ok(None) => {
            let status = driver.child.wait().await;
            bail!(
                "chromedriver ({}) ended before it listened ({status:?}):\n{}",
                chromedriver.display(),
                output_tail(&output)
            )
        }
        Err(_) => {
            driver.stop().await;
            bail!(
                "chromedriver ({}) did not report its port within {DRIVER_START_LIMIT:?}:\n{}",
                chromedriver.display(),
                output_tail(&output)
            )
        }
    }
}

/// Reads chromedriver's output to its end (so its pipe never fills), keeping
/// the last lines, and sends the port from "ChromeDriver was started
/// successfully on port N." when `port_tx` is given.
async fn keep_output(
    stream: impl AsyncRead + Unpin,
    output: Output,
    mut port_tx: Option<tokio::sync::mpsc::Sender<u16>>,
) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if let Some(port) = reported_port(&line) {
            if let Some(tx) = port_tx.take() {
                let _ = tx.send(port).await;
            }
        }
        let mut kept = output.lock().unwrap_or_else(|p| p.into_inner());
        if kept.len() >= KEPT_OUTPUT_LINES {
            kept.remove(0);
        }
        kept.push(line);
    }
}

/// The port in chromedriver's "ChromeDriver was started successfully on port
/// 43495." line.
fn reported_port(line: &str) -> Option<u16> {
    let rest = line.split("started successfully on port ").nth(1)?;
    rest.trim().trim_end_matches('.').parse().ok()
}

fn output_tail(output: &Output) -> String {
    let kept = output.lock().unwrap_or_else(|p| p.into_inner());
    if kept.is_empty() {
        "(nothing)".to_string()
    } else {
        kept.join("\n")
    }
}

/// Like `command -v NAME`: the first executable file called `name` in a
/// directory of `PATH`.
fn find_on_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| {
            std::fs::metadata(candidate)
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

/// `$RM_UI_SCREENSHOTS`, else `<workspace>/target/ui-screenshots`.
fn screenshots_dir() -> PathBuf {
    match std::env::var_os("RM_UI_SCREENSHOTS") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => {
            // This crate lives in <workspace>/crates/testkit.
            let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
            let workspace = manifest_dir.ancestors().nth(2).unwrap_or(manifest_dir);
            workspace.join("target").join("ui-screenshots")
        }
    }
}

fn file_stem(name: &str) -> String {
    let stem: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    match stem.trim_matches('.') {
        "" => "screenshot".to_string(),
        _ => stem,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_port_chromedriver_reports() {
        assert_eq!(
            reported_port("ChromeDriver was started successfully on port 43495."),
            Some(43495)
        );
        assert_eq!(reported_port("Starting ChromeDriver 156 on port 0"), None);
    }

    #[test]
    fn screenshot_names_stay_in_their_directory() {
        assert_eq!(file_stem("login page"), "login_page");
        assert_eq!(file_stem("../../etc/passwd"), ".._.._etc_passwd");
        assert_eq!(file_stem(".."), "screenshot");
        assert_eq!(file_stem(""), "screenshot");
    }
}
