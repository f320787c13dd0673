//! Headless Chromium driven over WebDriver (Debian's `chromium` and `chromium-driver`): a
//! chromedriver process on a loopback port chosen at run time, a fresh profile per browser,
//! and axe-core (tests/browser, installed by scripts/install-deps.sh) for accessibility.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// The W3C id of an element in WebDriver answers.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A chromedriver with one browser session; both end on drop.
pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    http: reqwest::blocking::Client,
    _profile: tempfile::TempDir,
    /// Where screenshots go (target/console-screenshots).
    pub shots: PathBuf,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Browser {
    /// Starts chromedriver and a headless Chromium with a fresh profile.
    pub fn start() -> Browser {
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()
            .unwrap();
        // chromedriver cannot report a port it chose itself: take a free one, and try again
        // with another if something took it in between.
        for _ in 0..5 {
            let port = free_port();
            let mut driver = Command::new("chromedriver")
                .arg(format!("--port={port}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("chromedriver (run scripts/install-deps.sh: chromium-driver)");
            let base = format!("http://127.0.0.1:{port}");
            let deadline = Instant::now() + Duration::from_secs(30);
            let mut up = false;
            while Instant::now() < deadline {
                if driver.try_wait().unwrap().is_some() {
                    break;
                }
                if let Ok(r) = http.get(format!("{base}/status")).send() {
                    if r.status().is_success() {
                        up = true;
                        break;
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            if !up {
                let _ = driver.kill();
                let _ = driver.wait();
                continue;
            }
            let profile = tempfile::Builder::new()
                .prefix("cloak-chromium-")
                .tempdir()
                .unwrap();
            let caps = json!({"capabilities": {"alwaysMatch": {
                "browserName": "chrome",
                "acceptInsecureCerts": true,
                "goog:chromeOptions": {
                    "binary": "/usr/bin/chromium",
                    "args": [
                        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                        format!("--user-data-dir={}", profile.path().display()),
                        "--disable-background-networking", "--disable-component-update",
                        "--disable-sync", "--no-first-run", "--window-size=1280,900",
                    ]
                }
            }}});
            let resp: Value = http
                .post(format!("{base}/session"))
                .json(&caps)
                .send()
                .unwrap()
                .json()
                .unwrap();
            let session = resp["value"]["sessionId"]
                .as_str()
                .unwrap_or_else(|| panic!("no WebDriver session: {resp}"))
                .to_string();
            let shots =
                PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/console-screenshots");
            std::fs::create_dir_all(&shots).unwrap();
            return Browser {
                driver,
                base,
                session,
                http,
                _profile: profile,
                shots,
            };
        }
        panic!("chromedriver did not start on any of 5 ports");
    }

    fn cmd(&self, method: &str, path: &str, body: Value) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let req = match method {
            "GET" => self.http.get(url),
            "DELETE" => self.http.delete(url),
            _ => self.http.post(url).json(&body),
        };
        let v: Value = req.send().unwrap().json().unwrap();
        if let Some(err) = v["value"]["error"].as_str() {
            panic!(
                "WebDriver {method} {path}: {err}: {}",
                v["value"]["message"]
            );
        }
        v["value"].clone()
    }

    /// Opens `url` and waits for the page to load.
    pub fn goto(&self, url: &str) {
        self.cmd("POST", "/url", json!({ "url": url }));
    }

    pub fn url(&self) -> String {
        self.cmd("GET", "/url", json!(null))
            .as_str()
            .unwrap()
            .to_string()
    }

    /// The elements matching a CSS selector.
    pub fn all(&self, css: &str) -> Vec<String> {
        self.cmd(
            "POST",
            "/elements",
            json!({"using": "css selector", "value": css}),
        )
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            e[ELEMENT]
                .as_str()
                .unwrap_or_else(|| panic!("not an element: {e}"))
                .to_string()
        })
        .collect()
    }

    /// The one element matching `css` (panics with the page's text if there is none).
    pub fn find(&self, css: &str) -> String {
        self.all(css)
            .into_iter()
            .next()
            .unwrap_or_else(|| panic!("no element {css} on {}:\n{}", self.url(), self.text("body")))
    }

    /// Clicks a link or submit button and waits until the next page has loaded (a loaded
    /// machine may answer the click before the navigation it starts).
    pub fn click(&self, css: &str) {
        let el = self.find(css);
        self.exec("window.__cloakOld = true;", json!([]));
        self.cmd("POST", &format!("/element/{el}/click"), json!({}));
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let done = self.exec(
                "return window.__cloakOld === undefined && document.readyState === 'complete';",
                json!([]),
            );
            if done == json!(true) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "clicking {css} on {} loaded no page",
                self.url()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Types into a field (after clearing it).
    pub fn fill(&self, css: &str, text: &str) {
        let el = self.find(css);
        self.cmd("POST", &format!("/element/{el}/clear"), json!({}));
        self.cmd(
            "POST",
            &format!("/element/{el}/value"),
            json!({ "text": text }),
        );
    }

    /// The rendered text of the first element matching `css` (read in one script, so a page
    /// that reloads itself cannot leave a stale element in between).
    pub fn text(&self, css: &str) -> String {
        self.exec(
            "const e = document.querySelector(arguments[0]); return e ? e.innerText : '';",
            json!([css]),
        )
        .as_str()
        .unwrap_or("")
        .to_string()
    }

    /// The page's HTML as the browser holds it.
    pub fn source(&self) -> String {
        self.cmd("GET", "/source", json!(null))
            .as_str()
            .unwrap()
            .to_string()
    }

    /// Runs a script in the page.
    pub fn exec(&self, script: &str, args: Value) -> Value {
        self.cmd(
            "POST",
            "/execute/sync",
            json!({"script": script, "args": args}),
        )
    }

    /// The value of cookie `name`, as the browser keeps it (with its attributes).
    pub fn cookie(&self, name: &str) -> Value {
        self.cmd("GET", &format!("/cookie/{name}"), json!(null))
    }

    pub fn delete_cookies(&self) {
        self.cmd("DELETE", "/cookie", json!(null));
    }

    /// Saves a PNG of the viewport as target/console-screenshots/NAME.png.
    pub fn screenshot(&self, name: &str) {
        use base64::Engine;
        let b64 = self.cmd("GET", "/screenshot", json!(null));
        let png = base64::engine::general_purpose::STANDARD
            .decode(b64.as_str().unwrap())
            .unwrap();
        std::fs::write(self.shots.join(format!("{name}.png")), png).unwrap();
    }

    /// Runs axe-core in the page; the serious and critical violations, described.
    pub fn axe(&self) -> Vec<String> {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/browser/node_modules/axe-core/axe.min.js");
        let src = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (run scripts/install-deps.sh, which runs npm ci in tests/browser)",
                path.display()
            )
        });
        self.exec(&src, json!([]));
        let v = self.cmd(
            "POST",
            "/execute/async",
            json!({"script": "const done = arguments[arguments.length - 1]; \
                    axe.run(document).then(r => done(r.violations.filter(v => v.impact === 'serious' || v.impact === 'critical') \
                      .map(v => v.id + ': ' + v.help + ' @ ' + v.nodes.map(n => n.target.join(' ')).join(', '))), \
                      e => done(['axe failed: ' + e]));",
                   "args": []}),
        );
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect()
    }

    /// Takes a screenshot of the page and asserts axe finds nothing serious on it.
    pub fn check_page(&self, name: &str) {
        self.screenshot(name);
        let v = self.axe();
        assert!(
            v.is_empty(),
            "axe on {name} ({}):\n{}",
            self.url(),
            v.join("\n")
        );
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self
            .http
            .delete(format!("{}/session/{}", self.base, self.session))
            .send();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
