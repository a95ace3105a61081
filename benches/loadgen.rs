//! A small HTTP/1.1 load generator for `benches/e2e.sh`: closed-loop maximum throughput over
//! N keep-alive connections, or an open-loop fixed request rate, reporting latency
//! percentiles and (for streams) time to the first body byte, as one JSON line.
//!
//! It runs on a single thread so that it takes the same CPU share whatever target it drives.
//!
//! ```text
//! loadgen --url http://127.0.0.1:8787/v1/chat/completions --body-file req.json \
//!         --header 'authorization: Bearer sk-warden-demo' --connections 32 --seconds 5
//! loadgen ... --rate 200 --seconds 10
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stdout)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

struct Args {
    url: Uri,
    body: Bytes,
    headers: Vec<(HeaderName, HeaderValue)>,
    connections: usize,
    seconds: f64,
    rate: Option<f64>,
}

fn parse_args() -> Args {
    let mut url = None;
    let mut body = Bytes::new();
    let mut headers = Vec::new();
    let mut connections = 32;
    let mut seconds = 5.0;
    let mut rate = None;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--url" => url = Some(val().parse().expect("url")),
            "--body-file" => body = std::fs::read(val()).expect("body file").into(),
            "--body" => body = Bytes::from(val()),
            "--header" => {
                let h = val();
                let (k, v) = h.split_once(':').expect("header is name: value");
                headers.push((k.trim().parse().expect("header name"), v.trim().parse().expect("header value")));
            }
            "--connections" => connections = val().parse().expect("connections"),
            "--seconds" => seconds = val().parse().expect("seconds"),
            "--rate" => rate = Some(val().parse().expect("rate")),
            other => panic!("unknown flag {other}"),
        }
    }
    Args { url: url.expect("--url is required"), body, headers, connections, seconds, rate }
}

#[derive(Default)]
struct Sample {
    latency: Vec<Duration>,
    ttfb: Vec<Duration>,
    errors: u64,
}

type Sender = http1::SendRequest<Full<Bytes>>;

async fn connect(url: &Uri) -> Sender {
    let addr = format!("{}:{}", url.host().unwrap(), url.port_u16().unwrap_or(80));
    let stream = TcpStream::connect(addr).await.expect("connect");
    stream.set_nodelay(true).unwrap();
    let (sender, conn) = http1::handshake(TokioIo::new(stream)).await.expect("handshake");
    tokio::task::spawn_local(async move {
        let _ = conn.await;
    });
    sender
}

/// One request: total latency and time to the first body frame.
async fn one(sender: &mut Sender, args: &Args) -> Option<(Duration, Duration)> {
    // Origin-form target: a raw HTTP/1 connection sends the URI as given.
    let path = args.url.path_and_query().map_or("/", |p| p.as_str());
    let mut req = Request::post(path).body(Full::new(args.body.clone())).unwrap();
    req.headers_mut().insert(http::header::HOST, HeaderValue::from_static("bench"));
    req.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    for (k, v) in &args.headers {
        req.headers_mut().insert(k.clone(), v.clone());
    }
    let start = Instant::now();
    sender.ready().await.ok()?;
    let resp = sender.send_request(req).await.ok()?;
    if !resp.status().is_success() {
        return None;
    }
    let mut body = resp.into_body();
    let mut ttfb = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.ok()?;
        if frame.is_data() && ttfb.is_none() {
            ttfb = Some(start.elapsed());
        }
    }
    let total = start.elapsed();
    Some((total, ttfb.unwrap_or(total)))
}

fn pct(v: &mut [Duration], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_unstable();
    let idx = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[idx].as_secs_f64() * 1000.0
}

async fn run(args: Arc<Args>) -> (Sample, f64) {
    let deadline = Instant::now() + Duration::from_secs_f64(args.seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    let per_conn_interval = args.rate.map(|r| Duration::from_secs_f64(args.connections as f64 / r));
    for i in 0..args.connections {
        let args = args.clone();
        tasks.push(tokio::task::spawn_local(async move {
            let mut sample = Sample::default();
            let mut sender = connect(&args.url).await;
            let mut ticker = per_conn_interval.map(|every| {
                // Spread the connections' schedules evenly over one interval.
                let offset = every.mul_f64(i as f64 / args.connections as f64);
                let mut t = tokio::time::interval_at(tokio::time::Instant::now() + offset, every);
                t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                t
            });
            while Instant::now() < deadline {
                if let Some(t) = &mut ticker {
                    t.tick().await;
                    if Instant::now() >= deadline {
                        break;
                    }
                }
                match one(&mut sender, &args).await {
                    Some((lat, ttfb)) => {
                        sample.latency.push(lat);
                        sample.ttfb.push(ttfb);
                    }
                    None => {
                        sample.errors += 1;
                        sender = connect(&args.url).await;
                    }
                }
            }
            sample
        }));
    }
    let mut all = Sample::default();
    for t in tasks {
        let s = t.await.unwrap();
        all.latency.extend(s.latency);
        all.ttfb.extend(s.ttfb);
        all.errors += s.errors;
    }
    (all, started.elapsed().as_secs_f64())
}

fn main() {
    let args = Arc::new(parse_args());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let local = tokio::task::LocalSet::new();
    let (mut s, secs) = local.block_on(&rt, run(args));
    let n = s.latency.len();
    println!(
        "{{\"requests\":{n},\"errors\":{},\"rps\":{:.1},\"p50_ms\":{:.3},\"p99_ms\":{:.3},\"ttfb_p50_ms\":{:.3},\"ttfb_p99_ms\":{:.3}}}",
        s.errors,
        n as f64 / secs,
        pct(&mut s.latency, 0.50),
        pct(&mut s.latency, 0.99),
        pct(&mut s.ttfb, 0.50),
        pct(&mut s.ttfb, 0.99),
    );
}
