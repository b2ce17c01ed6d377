"""Native packages kiln builds from source (today: Apache Mesos), for images to bake.

recipe     the recipe of a component (components/<name>/package/recipe.json) and its keys
buildroot  a clean root of the target to compile in, cached by its inputs
sandbox    running a script inside such a root (private mount, PID and network namespaces)
build      invoke package: compile → installed tree → .deb/.rpm, each step cached by key
"""
