"""Entry point of the Flex Template (FLEX_TEMPLATE_PYTHON_PY_FILE): runs `lakehouse <command>` on Dataflow."""

from pipelines.flex_template import main

if __name__ == "__main__":
    main()
