"""LLM-assisted MPI code generation verified by generated tests."""
