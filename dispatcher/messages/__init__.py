"""The Messages resource: create rules, intake, templates, scheduling, listing."""
