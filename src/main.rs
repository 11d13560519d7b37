fn main() {
    println!("ksmith");
}
