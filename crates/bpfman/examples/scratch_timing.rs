use std::time::Instant;
fn main() {
    let t = Instant::now();
    let btf = aya::Btf::from_sys_fs().unwrap();
    println!("btf parse {:?}", t.elapsed());
    let bytes = std::fs::read("target/bpf/tracing_test.bpf.o").unwrap();
    for with in [false, true, false, true] {
        let t = Instant::now();
        let mut l = aya::EbpfLoader::new();
        if with {
            l.btf(Some(&btf));
        } else {
            l.btf(None);
        }
        let mut e = l.load(&bytes).unwrap();
        let t1 = t.elapsed();
        let p: &mut aya::programs::TracePoint =
            e.program_mut("tp_count").unwrap().try_into().unwrap();
        p.load().unwrap();
        println!(
            "with_btf={with} obj load {:?} prog load {:?}",
            t1,
            t.elapsed()
        );
    }
    let t = Instant::now();
    let _ = aya::EbpfLoader::new().btf(None).load(&bytes).unwrap();
    println!("again {:?}", t.elapsed());
}
