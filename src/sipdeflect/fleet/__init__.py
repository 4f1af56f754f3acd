# Fleet: decisions shared between sipdeflect nodes over PostgreSQL (docs/fleet.md).
