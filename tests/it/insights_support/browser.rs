//! A headless Chromium driven by chromedriver over the WebDriver HTTP API, for the Insights
//! page tests.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};

use crate::common::free_port;

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

pub struct Driver {
    child: Child,
    base: String,
    session: String,
}

impl Driver {
    /// A browser with a 1,280 x 1,600 window.
    pub fn start(profile: &std::path::Path) -> Driver {
        Driver::start_sized(profile, 1280, 1600)
    }

    /// A browser whose window is `width` x `height`.
    pub fn start_sized(profile: &std::path::Path, width: u32, height: u32) -> Driver {
        let port = free_port();
        let child = Command::new("/usr/bin/chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn chromedriver");
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while ureq::get(&format!("{base}/status")).call().is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        let caps = json!({"capabilities": {"alwaysMatch": {"goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                     "--no-first-run", "--disable-background-networking",
                     "--disable-component-update", "--disable-sync",
                     format!("--window-size={width},{height}"),
                     format!("--user-data-dir={}", profile.display())]
        }}}});
        let mut driver = Driver {
            child,
            base,
            session: String::new(),
        };
        let resp = driver.call("POST", "/session", Some(caps));
        driver.session = resp["sessionId"].as_str().expect("session id").to_string();
        // A click that submits a form returns before the next page is there: finding elements
        // waits for them (up to 10 s) instead of racing the navigation.
        driver.call(
            "POST",
            &driver.s("/timeouts"),
            Some(json!({"implicit": 10_000})),
        );
        driver
    }

    pub fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}{}", self.base, path);
        let req = ureq::request(method, &url).timeout(Duration::from_secs(60));
        let res = match body {
            Some(b) => req.send_json(b),
            None => req.call(),
        };
        match res {
            Ok(r) => r.into_json::<Value>().unwrap()["value"].clone(),
            Err(ureq::Error::Status(code, r)) => {
                panic!(
                    "{method} {path}: {code} {}",
                    r.into_string().unwrap_or_default()
                )
            }
            Err(e) => panic!("{method} {path}: {e}"),
        }
    }

    pub fn s(&self, path: &str) -> String {
        format!("/session/{}{}", self.session, path)
    }

    pub fn go(&self, url: &str) {
        self.call("POST", &self.s("/url"), Some(json!({"url": url})));
    }

    pub fn find_all(&self, css: &str) -> Vec<String> {
        self.call(
            "POST",
            &self.s("/elements"),
            Some(json!({"using": "css selector", "value": css})),
        )
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e[ELEMENT].as_str().unwrap().to_string())
        .collect()
    }

    pub fn find(&self, css: &str) -> String {
        self.find_all(css)
            .into_iter()
            .next()
            .unwrap_or_else(|| panic!("no element {css} in:\n{}", self.source()))
    }

    pub fn text(&self, css: &str) -> String {
        let id = self.find(css);
        self.call("GET", &self.s(&format!("/element/{id}/text")), None)
            .as_str()
            .unwrap()
            .to_string()
    }

    pub fn click(&self, css: &str) {
        let id = self.find(css);
        self.call(
            "POST",
            &self.s(&format!("/element/{id}/click")),
            Some(json!({})),
        );
    }

    pub fn source(&self) -> String {
        self.call("GET", &self.s("/source"), None)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Runs `js` (a function body; `arguments` are `args`) in the page and returns its value.
    pub fn script(&self, js: &str, args: Value) -> Value {
        self.call(
            "POST",
            &self.s("/execute/sync"),
            Some(json!({"script": js, "args": args})),
        )
    }

    /// Switches into the frame that `css` finds, or back to the page with `None`.
    pub fn frame(&self, css: Option<&str>) {
        let id = match css {
            Some(css) => json!({ ELEMENT: self.find(css) }),
            None => Value::Null,
        };
        self.call("POST", &self.s("/frame"), Some(json!({ "id": id })));
    }

    /// Whether the page is wider than the window (it would scroll sideways): the document's
    /// scroll width and the window's inner width.
    pub fn widths(&self) -> (i64, i64) {
        let v = self.script(
            "return [document.scrollingElement.scrollWidth, window.innerWidth];",
            json!([]),
        );
        (v[0].as_i64().unwrap(), v[1].as_i64().unwrap())
    }

    pub fn screenshot(&self, path: &std::path::Path) {
        let b64 = self.call("GET", &self.s("/screenshot"), None);
        let png = base64::engine::general_purpose::STANDARD
            .decode(b64.as_str().unwrap())
            .unwrap();
        std::fs::write(path, png).unwrap();
        println!("screenshot: {}", path.display());
        eprintln!("screenshot: {}", path.display());
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = ureq::delete(&format!("{}/session/{}", self.base, self.session)).call();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
