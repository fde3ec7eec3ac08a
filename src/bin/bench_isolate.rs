fn main() {
    let dir = std::path::Path::new("../shared/data/bccd/JPEGImages");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let bytes: Vec<Vec<u8>> = files.iter().map(|p| std::fs::read(p).unwrap()).collect();
    for _ in 0..3 {
        let mut t = Vec::new();
        for b in &bytes {
            let t0 = std::time::Instant::now();
            let im = leuko::imageio::decode_rgb(b).unwrap();
            std::hint::black_box(&im);
            t.push(t0.elapsed().as_secs_f64() * 1000.0);
        }
        t.sort_by(|a, b| a.partial_cmp(b).unwrap());
        println!("decode median {:.3} ms", t[t.len() / 2]);
    }
}
