"""Pipeline stages, one package each: pure logic modules, adapters, thin @task wrappers."""
