"""The Ray Data batch job: plan -> render on replica actors -> encode/check/write -> summary."""
