//! Prints the OpenAPI document (`docs/openapi.json` is this output, checked by a test).

fn main() {
    let doc = local_server::openapi();
    println!(
        "{}",
        serde_json::to_string_pretty(&doc).expect("serialisable")
    );
}
