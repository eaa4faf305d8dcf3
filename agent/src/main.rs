/// jemalloc, set to back its memory with transparent huge pages. The feed
/// store and the compiler read arrays of hundreds of megabytes at random,
/// and with 4 KiB pages most of those reads also miss the TLB. The kernel
/// grants huge pages to processes that ask (`madvise` mode, the default of
/// most distributions) or to every process (`always`).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc reads its options from this symbol at start.
#[unsafe(export_name = "_rjem_malloc_conf")]
static MALLOC_CONF: &[u8; 29] = b"thp:always,metadata_thp:auto\0";

fn main() -> std::process::ExitCode {
    intelwall::cli::main()
}
