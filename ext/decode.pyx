# placeholder: replaced by the decoders (issue #3)
def _placeholder():
    return 1
