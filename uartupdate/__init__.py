"""uartupdate: update microcontroller software over a UART, with a device emulator."""

__version__ = "0.1.0"
