from onnxlam.cli import main

main()
