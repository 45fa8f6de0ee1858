fn main() {
    tch::set_num_threads(2);
    println!("{}", tch::Tensor::from_slice(&[1.0f32, 2.0]).sum(tch::Kind::Float).double_value(&[]));
}
