// A test-only piece with an error on line 4.

fn broken() -> f32 {
    return undefined_name + 1.0;
}
