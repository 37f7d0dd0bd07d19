"""Bad: defines no OvmsPythonModel."""


class SomethingElse:
    pass
