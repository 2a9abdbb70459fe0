//! What the emulator's tests share: an emulator on loopback and an HTTP client as a Consul
//! client talks to it.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Instant;

use consul_emulator::{Emulator, EmulatorConfig};
use reqwest::StatusCode;
use serde_json::Value;

pub fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// An emulator with the default configuration (its own agent node, no demo catalog).
pub async fn start() -> Emulator {
    Emulator::start(loopback(), EmulatorConfig::default())
        .await
        .expect("start emulator")
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client")
}

/// A response, read whole.
pub struct Reply {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("{e}: {}", self.text))
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("missing header {name}"))
    }

    /// `X-Consul-Index`.
    pub fn index(&self) -> u64 {
        self.header("x-consul-index")
            .parse()
            .expect("numeric index")
    }

    #[track_caller]
    pub fn ok(&self) -> &Self {
        assert_eq!(self.status, StatusCode::OK, "{}", self.text);
        self
    }

    #[track_caller]
    pub fn err(&self, status: u16, text: &str) {
        assert_eq!((self.status.as_u16(), self.text.as_str()), (status, text));
    }
}

pub async fn send(req: reqwest::RequestBuilder) -> Reply {
    let resp = req.send().await.expect("request");
    Reply {
        status: resp.status(),
        headers: resp.headers().clone(),
        text: resp.text().await.expect("body"),
    }
}

pub async fn get(emu: &Emulator, path_and_query: &str) -> Reply {
    send(client().get(format!("{}{path_and_query}", emu.url()))).await
}

pub async fn put(emu: &Emulator, path: &str, body: impl Into<reqwest::Body>) -> Reply {
    send(client().put(format!("{}{path}", emu.url())).body(body)).await
}

/// A GET on `path_and_query` started now (a blocking query), with when its reply came.
pub fn blocking(
    emu: &Emulator,
    path_and_query: String,
) -> tokio::task::JoinHandle<(Reply, Instant)> {
    let url = format!("{}{path_and_query}", emu.url());
    tokio::spawn(async move {
        let reply = send(client().get(url)).await;
        (reply, Instant::now())
    })
}
