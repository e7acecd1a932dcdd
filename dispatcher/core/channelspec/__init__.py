"""The channel spec language: a channel kind as a TOML file, validated at load, compiled once.

``model`` is the language (msgspec Structs, unknown keys refused), ``paths`` reads and
writes the dotted paths a spec names in payloads, ``template`` compiles the placeholders of
URL, header and body templates, ``load`` finds and checks the shipped and the user's specs.
The gateway's channel (``dispatcher.channels.spec_channel``) and the simulator
(``dispatcher.simulator.spec_api``) are both built from the same compiled spec.
"""
