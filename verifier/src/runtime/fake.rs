//! A fake device for CPU tests: host memory for buffers (with guard bytes after each), Rust
//! closures for kernels, faults injected the way CUDA reports them (refused at launch, or
//! asynchronously at the next synchronisation).

use super::backend::{Backend, Device};
use super::error::RuntimeError;
use super::gpu::GuardDamage;
use crate::dtype::DType;
use crate::nvrtc::{Arch, Compiled};
use crate::plan::ResolvedLaunch;
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;

const GUARD: usize = 16;

pub struct FakeBuf {
    pub id: u64,
    pub dtype: DType,
    /// `len` bytes, then GUARD guard bytes.
    pub data: RefCell<Vec<u8>>,
    pub len: usize,
}

impl FakeBuf {
    pub fn f32s(&self) -> Vec<f32> {
        self.data.borrow()[..self.len]
            .chunks(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    }
    /// Writes element `i`, which may be past the end (into the guard zone).
    pub fn set_f32(&self, i: usize, v: f32) {
        self.data.borrow_mut()[i * 4..i * 4 + 4].copy_from_slice(&v.to_le_bytes());
    }
}

pub enum Fault {
    Refuse(RuntimeError),
    Async(RuntimeError),
}

pub type Kernel =
    Box<dyn Fn(&ResolvedLaunch, &dyn Fn(&str) -> Rc<FakeBuf>, u32) -> Result<(), Fault>>;

#[derive(Default)]
pub struct Fake {
    /// Programs handed out by `Device::load`, in order.
    pub programs: RefCell<VecDeque<HashMap<String, Kernel>>>,
    bufs: RefCell<Vec<Rc<FakeBuf>>>,
    pending: RefCell<Option<RuntimeError>>,
    launches: Cell<u32>,
}

impl Backend for Fake {
    type Buffer = Rc<FakeBuf>;
    type Program = HashMap<String, Kernel>;

    fn alloc(&self, _name: &str, dtype: DType, numel: u64) -> Result<Rc<FakeBuf>, RuntimeError> {
        let len = numel as usize * dtype.size_bytes();
        let id = 0x1000 * (self.bufs.borrow().len() as u64 + 1);
        let b = Rc::new(FakeBuf {
            id,
            dtype,
            data: RefCell::new(vec![0xDB; len + GUARD]),
            len,
        });
        self.bufs.borrow_mut().push(Rc::clone(&b));
        Ok(b)
    }
    fn address(&self, b: &Rc<FakeBuf>) -> u64 {
        b.id
    }
    fn upload(&self, b: &Rc<FakeBuf>, bytes: &[u8]) -> Result<(), RuntimeError> {
        b.data.borrow_mut()[..b.len].copy_from_slice(bytes);
        Ok(())
    }
    fn download(&self, b: &Rc<FakeBuf>) -> Result<Vec<u8>, RuntimeError> {
        Ok(b.data.borrow()[..b.len].to_vec())
    }
    fn fill(&self, b: &Rc<FakeBuf>, element: &[u8]) -> Result<(), RuntimeError> {
        assert_eq!(element.len(), b.dtype.size_bytes());
        for c in b.data.borrow_mut()[..b.len].chunks_mut(element.len()) {
            c.copy_from_slice(element);
        }
        Ok(())
    }
    fn check_guards(&self, b: &Rc<FakeBuf>) -> Result<Option<GuardDamage>, RuntimeError> {
        let mut d = b.data.borrow_mut();
        let after = &mut d[b.len..];
        let bad = after.iter().filter(|&&x| x != 0xDB).count();
        let first = after.iter().position(|&x| x != 0xDB);
        after.fill(0xDB);
        Ok((bad > 0).then_some(GuardDamage {
            before: 0,
            after: bad,
            first_after: first,
        }))
    }
    fn launch(
        &self,
        program: &HashMap<String, Kernel>,
        l: &ResolvedLaunch,
        address: &dyn Fn(&str) -> Option<u64>,
    ) -> Result<(), RuntimeError> {
        if let Some(e) = self.pending.borrow().as_ref() {
            if e.is_sticky() {
                return Err(clone_err(e));
            }
        }
        let k = &program[&l.kernel];
        let by_name = |n: &str| -> Rc<FakeBuf> {
            let a = address(n).expect("buffer named in the plan");
            Rc::clone(
                self.bufs
                    .borrow()
                    .iter()
                    .find(|b| b.id == a)
                    .expect("allocated"),
            )
        };
        let n = self.launches.get();
        self.launches.set(n + 1);
        match k(l, &by_name, n) {
            Ok(()) => Ok(()),
            Err(Fault::Refuse(e)) => Err(e),
            Err(Fault::Async(e)) => {
                *self.pending.borrow_mut() = Some(e);
                Ok(())
            }
        }
    }
    fn synchronize(&self) -> Result<(), RuntimeError> {
        match self.pending.borrow().as_ref() {
            Some(e) => Err(clone_err(e)),
            None => Ok(()),
        }
    }
}

fn clone_err(e: &RuntimeError) -> RuntimeError {
    match e {
        RuntimeError::Cuda(c) => RuntimeError::Cuda(c.clone()),
        other => RuntimeError::NoDevice(other.to_string()),
    }
}

impl Device for Fake {
    fn arch(&self) -> Arch {
        Arch::DEFAULT
    }
    fn describe(&self) -> String {
        "fake device".into()
    }
    fn load(&self, _compiled: &Compiled) -> Result<HashMap<String, Kernel>, RuntimeError> {
        self.programs
            .borrow_mut()
            .pop_front()
            .ok_or_else(|| RuntimeError::NoDevice("the fake device has no program left".into()))
    }
}
