#![allow(clippy::unwrap_used, clippy::print_stdout, clippy::expect_used)]
use std::time::Instant;
fn main() {
    let data = std::fs::read_to_string("../shared/data/injection/dev.jsonl").unwrap();
    let texts: Vec<String> = data.lines().filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()).filter_map(|v| v["text"].as_str().map(str::to_string)).collect();
    let bytes: usize = texts.iter().map(|t| t.len()).sum();
    warden::injection::warm();
    for t in &texts { std::hint::black_box(warden::injection::scan(t)); }
    let s = Instant::now();
    for t in &texts { std::hint::black_box(warden::injection::normalize::views(t)); }
    let v = s.elapsed();
    let s = Instant::now();
    for t in &texts { std::hint::black_box(warden::injection::scan(t)); }
    let a = s.elapsed();
    let kib = bytes as f64 / 1024.0;
    for (name, sel) in [("ascii", true), ("non-ascii", false)] {
        let subset: Vec<&String> = texts.iter().filter(|t| t.is_ascii() == sel).collect();
        let b: usize = subset.iter().map(|t| t.len()).sum();
        let s = Instant::now();
        for t in &subset { std::hint::black_box(warden::injection::normalize::views(t)); }
        let v = s.elapsed();
        let s = Instant::now();
        for t in &subset { std::hint::black_box(warden::injection::scan(t)); }
        let a = s.elapsed();
        println!("{name}: {} texts {} KiB, views {:.1} µs/KiB, scan {:.1} µs/KiB", subset.len(), b/1024, v.as_secs_f64()*1e6/(b as f64/1024.0), a.as_secs_f64()*1e6/(b as f64/1024.0));
    }
    println!("views {:.1} µs/KiB, scan {:.1} µs/KiB", v.as_secs_f64()*1e6/kib, a.as_secs_f64()*1e6/kib);
}
