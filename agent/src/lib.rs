//! kernelsmith's agent: LLM providers, prompt rendering, the Coder/Judge loop and evolutionary
//! search. Nothing here touches CUDA directly.

pub mod extract;
pub mod llm;
pub mod prompt;
