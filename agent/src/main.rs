fn main() -> std::process::ExitCode {
    intelwall::cli::main()
}
