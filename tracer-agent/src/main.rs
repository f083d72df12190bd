mod clock;
mod conn;
mod context;
mod http;
mod process;
mod sampler;
mod semconv;
mod span;
mod tracker;

fn main() {}
