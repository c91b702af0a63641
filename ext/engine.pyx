# placeholder: replaced by the engine implementation (issue #2)
def _placeholder():
    return 1
